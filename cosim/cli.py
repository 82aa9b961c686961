"""``python -m cosim``: exit 0 ok, 2 bad input (one line naming what is wrong), 1 internal failure."""

from __future__ import annotations

import argparse
import hashlib
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from cosim.config import (
    Workload,
    WorkloadError,
    dump_resolved,
    load_preset,
    load_workload,
    preset_names,
)
from cosim.errors import InputError
from cosim.fmt import num
from cosim.outdir import MARKER, OutputDir, claim, marker_kind, owned_by_tool


class UsageError(InputError):
    """Bad command-line input (exit 2)."""


def _workload(args: argparse.Namespace) -> Workload:
    overrides = list(args.set or [])
    if getattr(args, "seed", None) is not None:
        overrides.append(f"simulation.seed={args.seed}")
    return load_workload(args.workload, overrides)


def _out_dir(args: argparse.Namespace, w: Workload, sub: str = "runs") -> Path:
    """``--out``, or ``<sub>/<name>`` with the overrides spelled into the name, so that variants of one
    workload (``--set ...``, ``--seed``) land side by side instead of replacing each other."""
    if args.out:
        return Path(args.out)
    overrides = list(args.set or [])
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    return Path(sub) / variant_name(w.name, overrides)


def variant_name(name: str, overrides: list[str]) -> str:
    if not overrides:
        return name
    slug = "--".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", o.strip()) for o in overrides)
    if len(slug) > 80:  # keep it a legal, readable file name; the digest keeps variants apart
        slug = slug[:64] + "-" + hashlib.sha256("\0".join(overrides).encode()).hexdigest()[:12]
    return f"{name}--{slug}"


def _replaced(target: OutputDir) -> str:
    return f" (replaced {target.replaced})" if target.replaced else ""


def cmd_run(args: argparse.Namespace) -> int:
    from cosim import api

    w = _workload(args)
    out = _out_dir(args, w)
    progress = not args.quiet and sys.stderr.isatty()
    t0 = time.perf_counter()
    with claim(out, "run", force=args.force) as target:  # an unusable --out fails here, before the work
        result = api.run(w, progress=progress)
        target.commit(result.fill)
    s = result.summary
    full = s.get("speedup_vs_dense_full_attention")
    full = f"; {full:.3f}x vs dense with full attention" if full is not None else ""
    print(
        f"{w.name}: latency {num(s['latency_s'])} s (dense {num(s['dense_latency_s'])} s, "
        f"{s['speedup_vs_dense']:.3f}x{full}), replay {s['replay_ratio']:.1%}, energy {num(s['energy_j'])} J, "
        f"{s['avg_power_w']:.3g} W, {s['mode']} model{' (' + s['granularity'] + ')' if s.get('granularity') else ''}, trace {s['trace_source']} -> {out}{_replaced(target)} "
        f"[{time.perf_counter() - t0:.1f} s]"
    )
    if not s["fits_board"]:
        print(f"warning: the design {s['fits_board_detail']}", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cosim.sweep import load_sweep, prepare, run_sweep, write_front_runs, write_outputs

    if args.jobs < 1:
        raise UsageError(f"--jobs: {args.jobs} is not a number of worker processes (1 or more)")
    sweep, text = load_sweep(args.sweep)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / sweep.name
    how = prepare(sweep, text, out, args.resume, args.force, storage=args.storage)
    t0 = time.perf_counter()
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=None, unit="point", desc=sweep.name, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    result = run_sweep(
        sweep, out, jobs=args.jobs, progress=progress, storage=args.storage, scheduler=args.scheduler
    )
    if bar is not None:
        bar.close()
    front = write_outputs(sweep, result["rows"], out)
    if args.write_front:  # the front runs' reports and the sweep's share one out/plotly.min.js
        write_front_runs(sweep, front, out, shared_plotlyjs=True)
    from reports.sweep_report import write_sweep_report

    write_sweep_report(out, shared_plotlyjs=True)
    errors = sum(r["status"] == "error" for r in result["rows"])
    screened = [r for r in result["rows"] if r["stage"] == "screen"]
    feasible = sum(r["constraints_met"] for r in screened)
    confirmed = len(result["rows"]) - len(screened)
    print(
        f"{sweep.name}: {how}; {result['ran']} points run, {result['skipped']} already done, {errors} failed; "
        f"{feasible} of {len(screened)} meet the constraints, {len(front)} on the Pareto front"
        + (f", {confirmed} confirmed" if sweep.confirm else "")
        + f" -> {out} [{time.perf_counter() - t0:.1f} s]"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from cosim.calibrate import (
        Model,
        identification,
        leave_one_out,
        load_calibration,
        profiles,
        residuals,
        write_calibration,
    )

    if args.profile_points == 1 or args.profile_points < 0:
        raise UsageError(f"--profile-points: {args.profile_points}; 0 (no profiles) or 2 or more")
    if args.jobs < 1:
        raise UsageError(f"--jobs: {args.jobs} is not a number of worker processes (1 or more)")
    cal, text = load_calibration(args.calibration, args.set)
    out = (
        Path(args.out) if args.out else Path("runs") / "calibrations" / variant_name(cal.name, args.set or [])
    )
    t0 = time.perf_counter()
    with claim(out, "calibration", force=args.force) as target:
        bar = None
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(unit="run", desc=cal.name, file=sys.stderr)
        model = Model(cal, progress=(lambda n: bar.update(1)) if bar else None, jobs=args.jobs)
        try:
            fit = model.fit()
            loo = leave_one_out(model, fit.best) if len(cal.rows) > 1 and not args.no_loo else []
            prof = profiles(model, fit.best, args.profile_points) if args.profile_points else []
        finally:
            model.close()
        if bar is not None:
            bar.close()
        target.commit(lambda d: write_calibration(d, text, cal, fit, loo, prof))
    from reports.calibration_report import write_calibration_report

    write_calibration_report(out)
    worst = max(abs(r["rel_error"]) for r in residuals(cal, fit.best))
    loo_worst = f", leave-one-out max {max(abs(r['rel_error']) for r in loo):.2%}" if loo else ""
    best = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in fit.best.params.items()
    )
    print(
        f"{cal.name}: RMS relative error {fit.best.rms:.2%}, max {worst:.2%}{loo_worst}; {best}; "
        f"{identification(cal, prof, fit.best)['note']} ({model.runs} simulations) -> {out}{_replaced(target)} "
        f"[{time.perf_counter() - t0:.1f} s]"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    print(dump_resolved(_workload(args)), end="")
    return 0


def cmd_program(args: argparse.Namespace) -> int:
    """The compiled instruction stream of one layer at one decode step, with what each instruction costs."""
    import numpy as np

    from accelerator.compiler import listing, program
    from accelerator.machine import Machine
    from cosim.simulate import make_job

    w = _workload(args)
    v = w.video
    step = v.tokens_per_frame if args.step is None else args.step
    if not 0 <= step < v.steps:
        raise UsageError(f"--step: {step} is not a decode step of this workload (0 to {v.steps - 1})")
    job = make_job(w, np.zeros((v.batch, w.model.layers, v.steps), dtype=bool))
    opts = Machine(job, barrier=w.scheduler.layer_barrier).options(step)
    ctx = int(job.cost.attended(job.context()[step]))
    stream, tail = program(job.cost, opts)
    print(
        f"# {w.name}: one layer at decode step {step} (frame {step // v.tokens_per_frame}, {ctx} attended tokens), "
        f"{w.hardware.name}, {w.hardware.clock_MHz:g} MHz; {len(stream)} instructions"
    )
    print(listing(stream, job.cost, ctx))
    if tail:
        print("# after the last layer of the step")
        print(listing(tail, job.cost, ctx))
    return 0


def _type_name(annotation) -> str:
    origin = get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin in (list, tuple):
        return f"list[{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping[{', '.join(_type_name(a) for a in args)}]"
    if str(origin).endswith("Literal"):
        return " | ".join(repr(a) for a in get_args(annotation))
    name = " | ".join(_type_name(a) for a in args)
    return f"{name} | null" if type(None) in get_args(annotation) else name


def _walk(model: type[BaseModel], indent: int, lines: list[str]) -> None:
    for name, field in model.model_fields.items():
        ann = field.annotation
        sub = next(
            (a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        pad = "  " * indent
        desc = field.description or ""
        if sub is not None and get_origin(ann) is None:
            lines.append(f"{pad}{name}:  # {desc}" if desc else f"{pad}{name}:")
            _walk(sub, indent + 1, lines)
            continue
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "default: see preset" if name == "memory" else "default: {}"
        else:
            default = f"default: {field.default!r}"
        lines.append(f"{pad}{name}: {_type_name(ann)}  ({default})  {desc}".rstrip())
        if name == "memory":
            lines.append(f"{pad}  <group name>:")
            from accelerator.spec import MemoryGroup

            _walk(MemoryGroup, indent + 2, lines)


def cmd_schema(args: argparse.Namespace) -> int:
    lines = ["# workload YAML: key (type) (default) description; units are in the key names"]
    _walk(Workload, 0, lines)
    print("\n".join(lines))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    print("model presets (model.preset):")
    for name in preset_names("model"):
        data = load_preset("model", name)
        m, v = data["model"], data.get("video", {})
        print(
            f"  {name:18s} {m.get('name', ''):24s} layers {m['layers']:>3}, hidden {m['hidden']:>5}, "
            f"heads {m['heads']}/{m.get('kv_heads', m['heads'])}, mlp {m['mlp_hidden']:>5}, "
            f"{v.get('tokens_per_frame', '?')} tokens/frame"
        )
    print("hardware presets (hardware.preset):")
    for name in preset_names("board"):
        h = load_preset("board", name)["hardware"]
        mem = ", ".join(f"{g} {m['bandwidth_GBps']} GB/s" for g, m in h.get("memory", {}).items())
        print(
            f"  {name:18s} {h.get('name', ''):14s} {h.get('cores', '?')} cores x {h.get('lanes_per_core', '?')} "
            f"lanes at {h.get('clock_MHz', '?')} MHz; {mem}"
        )
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from cosim.traces import capture_bundle, fill_capture

    w = _workload(args)
    if w.trace.source != "capture":
        raise WorkloadError(
            f"{args.workload}: trace.source is {w.trace.source}; capture needs trace.source: capture"
        )
    out = _out_dir(args, w, "captures")
    with claim(out, "capture", force=args.force) as target:
        bundle = capture_bundle(w, progress=not args.quiet and sys.stderr.isatty())
        target.commit(lambda d: fill_capture(bundle, d))
    print(f"{w.name}: trace.parquet and quality.json -> {out}{_replaced(target)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.run_report import write_run_report

    d = Path(args.dir)
    kind = marker_kind(d)
    if kind == "calibration" or (kind is None and owned_by_tool(d, "calibration")):
        from reports.calibration_report import write_calibration_report

        print(write_calibration_report(d))
        return 0
    if not (d / "summary.json").is_file():
        raise UsageError(f"{d}: not a run or calibration directory (no summary.json, no fit.json)")
    if marker_kind(d) != "run" and not owned_by_tool(d, "run"):
        raise UsageError(
            f"{d}: not a run directory written by this tool (no {MARKER}, and it holds files a run does "
            "not write); report writes report.html only into run directories"
        )
    print(write_run_report(d))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reports.compare_report import read_runs, write_comparison

    runs = read_runs(args.dirs)  # every directory checked before anything is written
    if args.out:
        out = Path(args.out)
    else:  # runs/compare/A--B: the compared directories' names, as run variants are named
        names = [Path(d).resolve().name for d in args.dirs]
        out = Path("runs") / "compare" / variant_name(names[0], names[1:])
    for r in runs:  # a run directory holding a comparison would no longer be a run the tool owns
        if r.path.resolve() in (out.resolve(), *out.resolve().parents):
            raise UsageError(f"{out}: inside the run directory {r.path}; write the comparison elsewhere")
    with claim(out, "compare", force=args.force) as target:
        target.commit(lambda d: write_comparison(runs, d))
    print(f"{len(runs)} runs compared, the first as reference -> {out / 'report.html'}{_replaced(target)}")
    return 0


def cmd_rtl(args: argparse.Namespace) -> int:
    from cosim import rtl_cli

    if args.rtl_command == "check":
        return rtl_cli.rtl_check(verbose=args.verbose)
    if args.rtl_command == "layer":
        return rtl_cli.rtl_layer(
            _workload(args), args.step, args.layer, args.simulator, not args.quiet and sys.stderr.isatty()
        )
    hw = _workload(args).hardware if args.workload else None
    if hw is None and args.set:
        raise UsageError("rtl export: --set needs --workload (the workload whose hardware is exported)")
    progress = not args.quiet and sys.stderr.isatty()
    return rtl_cli.rtl_export(Path(args.out), vcd=args.vcd, hw=hw, force=args.force, progress=progress)


def _force_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--force",
        action="store_true",
        help="replace the output directory even if this tool did not write it (its contents are deleted)",
    )


class _VersionAction(argparse.Action):
    """``--version``, worked out only when asked (it runs git)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from cosim.provenance import version_line

        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cosim", description="FastCar co-design simulator")
    p.add_argument(
        "--version",
        action=_VersionAction,
        help="print the tool version, its git commit and Python, then exit",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def workload_cmd(name: str, help_: str, out: str | None = None) -> argparse.ArgumentParser:
        """A command on a workload file; ``out``: the folder its default output directory goes in."""
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("workload", help="workload YAML file")
        sp.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. hardware.cores=8"
        )
        if out:
            sp.add_argument(
                "--out", help=f"output directory (default: {out}/NAME, the overrides spelled into NAME)"
            )
            _force_flag(sp)
            sp.add_argument("--quiet", action="store_true", help="no progress bars")
        return sp

    run = workload_cmd("run", "simulate one workload and write a run directory", out="runs")
    run.add_argument("--seed", type=int, help="simulation seed (simulation.seed)")
    run.set_defaults(func=cmd_run)
    workload_cmd("validate", "check a workload and print it fully resolved").set_defaults(func=cmd_validate)
    prog = workload_cmd("program", "print the compiled instruction stream of one layer")
    prog.add_argument(
        "--step", type=int, help="decode step (default: the first step of frame 1, where TAS and DRS run)"
    )
    prog.set_defaults(func=cmd_program)
    sub.add_parser("schema", help="the workload key tree with types, units and defaults").set_defaults(
        func=cmd_schema
    )
    sub.add_parser("presets", help="the model and hardware presets shipped").set_defaults(func=cmd_presets)
    cap = workload_cmd("capture", "capture a replay trace from the PyTorch model only", out="captures")
    cap.add_argument("--seed", type=int, help="seed (simulation.seed)")
    cap.set_defaults(func=cmd_capture)
    rep = sub.add_parser("report", help="(re)build report.html from a run or calibration directory")
    rep.add_argument("dir", help="a run directory, or a calibration directory (python -m cosim calibrate)")
    rep.set_defaults(func=cmd_report)
    cmp = sub.add_parser(
        "compare",
        help="put two or more run directories side by side in one report",
        description="Write a comparison directory: report.html (headline metrics with each run's "
        "difference from the first, what differs in their workloads, time by kind of work, time per "
        "layer, energy by component), the numbers behind it in report_data/*.csv, compare.json and "
        "provenance.json.",
    )
    cmp.add_argument("dirs", nargs="+", metavar="RUN_DIR", help="run directories; the first is the reference")
    cmp.add_argument(
        "--out", help="output directory (default: runs/compare/A--B, the run directories' names)"
    )
    _force_flag(cmp)
    cmp.set_defaults(func=cmd_compare)
    sw = sub.add_parser("sweep", help="run a design-space sweep file (docs/api.md)")
    sw.add_argument("sweep", help="sweep YAML file")
    sw.add_argument("--out", help="output directory (default: runs/sweeps/NAME)")
    sw.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    sw.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on the Dask cluster at ADDRESS (tcp://HOST:PORT) instead"
    )
    sw.add_argument(
        "--storage",
        metavar="URL",
        help="results database (default: OUT/results.sqlite; postgresql://USER@HOST/DB shares a study)",
    )
    sw.add_argument(
        "--resume", action="store_true", help="finish an interrupted sweep, or join one in --storage"
    )
    sw.add_argument(
        "--write-front",
        action="store_true",
        help="write a run directory per Pareto point under OUT/runs/KEY, linked from the report",
    )
    _force_flag(sw)
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=cmd_sweep)
    cal = sub.add_parser("calibrate", help="fit free workload keys to measured rows (cosim/calibrate.py)")
    cal.add_argument("calibration", help="calibration YAML file")
    cal.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="add a key to the file's fixed overrides; on a free parameter, hold it there",
    )
    cal.add_argument("--out", help="output directory (default: runs/calibrations/NAME)")
    cal.add_argument("--no-loo", action="store_true", help="skip the leave-one-out fits")
    cal.add_argument(
        "--profile-points",
        type=int,
        default=9,
        help="values per continuous parameter in the residual profiles (default 9; 0: none)",
    )
    _force_flag(cal)
    cal.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes that run a parameter set's rows in parallel (default 1)",
    )
    cal.add_argument("--quiet", action="store_true", help="no progress bar")
    cal.set_defaults(func=cmd_calibrate)
    rtl = sub.add_parser("rtl", help="MyHDL twins: cross-check or export Verilog/VHDL and resources")
    rtl_sub = rtl.add_subparsers(dest="rtl_command", required=True, metavar="check|export|layer")
    chk = rtl_sub.add_parser("check", help="cross-check RTL against the cost model")
    chk.add_argument(
        "--verbose",
        action="store_true",
        help="also print the TAS co-check per tau, and the traceback of a check that crashes",
    )
    exp = rtl_sub.add_parser("export", help="write Verilog/VHDL, resource table, optional VCD")
    exp.add_argument("--out", required=True, help="directory for the Verilog, VHDL, resource table and VCDs")
    _force_flag(exp)
    exp.add_argument("--vcd", action="store_true", help="also write VCD waveforms of a short stimulus")
    exp.add_argument(
        "--workload",
        metavar="WORKLOAD.yaml",
        help="export the hardware of this workload (default: the hardware section's defaults)",
    )
    exp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of --workload")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    lay = rtl_sub.add_parser(
        "layer", help="run one decoder layer of one decode step on the RTL top level and the event model"
    )
    lay.add_argument("workload", help="workload YAML file")
    lay.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    lay.add_argument(
        "--step", type=int, help="decode step (default: the first step of frame 1, where TAS and DRS run)"
    )
    lay.add_argument("--layer", type=int, default=0, help="decoder layer (default 0)")
    lay.add_argument(
        "--simulator",
        choices=("verilator", "myhdl"),
        default="verilator",
        help="verilator (the converted Verilog; default) or myhdl (the MyHDL model, small layers only)",
    )
    lay.add_argument("--quiet", action="store_true", help="no progress messages")
    rtl.set_defaults(func=cmd_rtl)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: unwinding removes staging directories and releases locks."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:  # an internal failure: say so, keep the traceback for the bug report
        traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
