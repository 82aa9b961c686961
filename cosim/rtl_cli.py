"""``python -m cosim rtl check|export``: cross-check the MyHDL twins, and write their HDL and resource table.

``rtl_check`` runs, per module, randomized three-view cross-checks (RTL cycles = cost formula = event
component, outputs bit-equal to the Python reference), a co-simulation of the converted Verilog against
the MyHDL model under Icarus, a replay of the MyHDL port trace on the converted VHDL under GHDL, the tool
checks (iverilog, verilator lint, ghdl analysis and elaboration) and prints the module's resources from the
table; then the fixed-point TAS co-check. One line per module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from accelerator.rtl.convert import convert, tool_checks
from accelerator.rtl.drs import DrsBench, drs_case
from accelerator.rtl.harness import Bench, check, simulate
from accelerator.rtl.pe_lane import GemvBench, gemv_case
from accelerator.rtl.replay_cache import ReplayBench, replay_case
from accelerator.rtl.resources import LABEL, SWEEPS, bench_for, estimate, load_table, write_csv
from accelerator.rtl.tas_unit import TasBench, tas_case
from accelerator.rtl.tools import cache_root, missing
from accelerator.rtl.vhdl_sim import ghdl_replay
from accelerator.spec import HardwareSpec
from cosim.errors import InputError
from cosim.outdir import MARKER, claim

#: module name -> random case generator (numpy Generator -> Bench)
CASES: dict[str, Callable[[np.random.Generator], Bench]] = {
    GemvBench.name: gemv_case,
    TasBench.name: tas_case,
    DrsBench.name: drs_case,
    ReplayBench.name: replay_case,
}


def _table_row(module: str) -> dict | None:
    """The table's row at the middle of the module's sweep (the representative parameter set)."""
    try:
        rows = [r for r in load_table()["rows"] if r["module"] == module]
    except FileNotFoundError:
        return None
    return rows[len(rows) // 2] if rows else None


def _resources_text(module: str) -> str:
    row = _table_row(module)
    if row is None:
        return "resources: no table (python -m accelerator.rtl.resources)"
    return (
        f"LUT {row['luts']} FF {row['ffs']} DSP {row['dsps']} BRAM36 {row['brams']:g} "
        f"@ {row['param']}={row['value']} (pre-P&R)"
    )


def check_module(module: str, cases: int = 4, seed: int = 0) -> tuple[bool, str]:
    """All checks of one module; returns (ok, one-line summary)."""
    rng = np.random.default_rng(seed)
    results = [check(CASES[module](rng)) for _ in range(cases)]
    jobs = sum(len(r.rtl_cycles) for r in results)
    cyc = sum(sum(r.rtl_cycles) for r in results)
    cycles_ok = all(r.cycles_equal for r in results)
    outputs_ok = all(r.outputs_equal for r in results)
    parts = [
        f"cycles {'equal' if cycles_ok else 'DIFFER'} ({cases} cases, {jobs} jobs, {cyc} cycles)",
        f"outputs {'equal' if outputs_ok else 'DIFFER'}",
    ]
    if not cycles_ok:
        bad = next(r for r in results if not r.cycles_equal)
        parts.append(f"[rtl {bad.rtl_cycles} cost {bad.cost_cycles} event {bad.event_cycles}]")
    if not outputs_ok:
        parts.append(next(r for r in results if not r.outputs_equal).mismatch)
    ok = cycles_ok and outputs_ok

    absent = missing("iverilog", "iverilog-vpi", "vvp")
    if absent:
        parts.append(f"cosim skipped ({', '.join(absent)} not installed)")
    else:
        bench = CASES[module](np.random.default_rng(seed + 1000))
        a, b = simulate(bench, "myhdl"), simulate(bench, "icarus")
        same = a.latencies == b.latencies and a.outputs == b.outputs
        ok &= same
        parts.append(f"cosim {'bit-exact' if same else 'DIFFERS'}")

    replay = ghdl_replay(CASES[module](np.random.default_rng(seed + 2000)))
    if replay.skipped:
        parts.append(f"vhdl replay skipped ({replay.skipped})")
    else:
        ok &= replay.ok
        parts.append(
            f"vhdl {'bit-exact' if replay.ok else 'DIFFERS: ' + replay.detail} ({replay.cycles} cycles)"
        )

    param, values, fixed = SWEEPS[module]
    lint = tool_checks(bench_for(module, {**fixed, param: values[len(values) // 2]}))
    ran = {k: v for k, v in lint.items() if not v.skipped}
    lint_ok = all(v.ok for v in ran.values())
    ok &= lint_ok
    text = f"lint {'clean' if lint_ok else 'FAILED'} ({', '.join(ran)})" if ran else "lint skipped"
    skipped = [f"{k}: {v.skipped}" for k, v in lint.items() if v.skipped]
    if skipped:
        text += f" [skipped {'; '.join(skipped)}]"
    parts.append(text)
    parts.append(_resources_text(module))
    return ok, f"{module:18s} " + "  ".join(parts)


def check_tas_cosim(verbose: bool = False, prompts: int = 4) -> tuple[bool, str]:
    """Fixed-point TAS vs the model's float decisions (informational unless the agreement is low)."""
    try:
        from accelerator.rtl.cocheck import capture_qk, cocheck, sweep
    except ImportError as exc:  # torch missing
        return True, f"{'tas co-check':18s} skipped ({exc})"
    qk = capture_qk(prompts=prompts)
    results = sweep(qk)
    causes = results.causes()
    unexplained = causes["unexplained"]
    worst = results.worst
    sample = cocheck(qk, worst.tau, worst.width, worst.frac_bits, rtl_sample=16)
    line = (
        f"{'tas co-check':18s} fixed vs float replay decisions on {worst.entries} decisions (width "
        f"{worst.width}, frac {worst.frac_bits}): {results.summary()}; {sum(causes.values())} disagreements "
        f"({causes['rounding']} rounding near tau, {causes['saturation']} saturation, {unexplained} "
        f"unexplained); MyHDL unit {'matches' if sample.rtl_equal else 'DIFFERS FROM'} the fixed-point "
        f"model on {sample.rtl_sample} captured entries; {qk.source}"
    )
    if verbose:
        for r in results.checks:
            print(
                f"  tau {r.tau:+.5f}: agreement {100 * r.agreement:.3f}%, {len(r.disagreements)} disagreements"
            )
    ok = unexplained == 0 and bool(sample.rtl_equal)
    return ok, line


def rtl_check(
    verbose: bool = False, cases: int = 4, seed: int = 0, cocheck_prompts: int = 4, formal: bool = True
) -> int:
    """Run every module's cross-checks (``cases`` random cases each), the TAS co-check (a dense decode
    of ``cocheck_prompts`` prompts) and the formal properties; print one line per check; 0 if all pass
    (a check whose tool is missing is skipped), 1 otherwise."""
    cache_root()  # an unsafe or unusable build cache is bad input (exit 2), refused before any check
    ok = True
    for i, module in enumerate(CASES):
        try:
            m_ok, line = check_module(module, cases=cases, seed=seed + i)
        except Exception as exc:  # a crash of one module's check is a failure, not a traceback
            m_ok, line = False, f"{module:18s} ERROR {type(exc).__name__}: {exc}"
            if verbose:
                import traceback

                traceback.print_exc()
        ok &= m_ok
        print(line, flush=True)
    c_ok, line = check_tas_cosim(verbose, cocheck_prompts)
    ok &= c_ok
    print(line, flush=True)
    if formal:
        from accelerator.rtl.formal import check_all

        for name, f_ok, detail in check_all():
            skipped = detail.startswith("skipped")
            ok &= f_ok or skipped
            print(
                f"formal {name:22s} {'ok' if f_ok else ('' if skipped else 'FAILED')} {detail}".rstrip(),
                flush=True,
            )
    print(f"resources: {LABEL}")
    return 0 if ok else 1


def export_benches(hw: HardwareSpec | None = None) -> list[Bench]:
    """The parameter sets exported: the hardware spec's lanes, cores, ports and precisions, with the
    VILA-U 7B head shape and a 32-layer x 256-position replay cache."""
    from accelerator.rtl.drs import DrsParams
    from accelerator.rtl.pe_lane import GemvParams, accumulator_bits
    from accelerator.rtl.replay_cache import ReplayParams
    from accelerator.rtl.tas_unit import TasParams

    hw = hw or HardwareSpec()
    p = hw.precision
    depth = 16384
    # The default 40-bit accumulator, or wider where the precisions need it over the full buffer depth.
    acc_bits = max(GemvParams.acc_bits, accumulator_bits(p.weights_bits, p.activations_bits, depth))
    return [
        GemvBench(
            GemvParams(
                lanes=hw.lanes_per_core,
                w_bits=p.weights_bits,
                x_bits=p.activations_bits,
                max_cols=depth,
                acc_bits=acc_bits,
            ),
            [],
        ),
        TasBench(TasParams(heads=32, head_dim=128, lanes=hw.tas_lanes, width=16), []),
        DrsBench(DrsParams(cores=hw.cores), [], 1),
        ReplayBench(
            ReplayParams(
                layers=32,
                tokens_per_frame=256,
                words=4096,
                word_bits=p.replay_cache_bits,
                port_bits=hw.replay_port_bits,
            ),
            [],
        ),
    ]


def rtl_export(
    out_dir: Path,
    vcd: bool = False,
    hw: HardwareSpec | None = None,
    force: bool = False,
    progress: bool = False,
) -> int:
    """Write Verilog and VHDL of every module, the resource table (CSV), the estimate for ``hw`` and,
    with ``vcd``, waveforms of a short random stimulus per module. Written atomically, and only over an
    earlier export (:mod:`cosim.outdir`)."""
    out_dir = Path(out_dir)

    def fill(tmp: Path) -> None:
        from tqdm import tqdm

        manifest = {"label": LABEL, "modules": {}}
        benches = export_benches(hw)
        with tqdm(total=len(benches) + (len(CASES) if vcd else 0), disable=not progress, unit="step") as bar:
            for bench in benches:
                bar.set_description(f"convert {bench.name}")
                convert(bench, "Verilog", tmp / "verilog")
                convert(bench, "VHDL", tmp / "vhdl")
                manifest["modules"][bench.name] = asdict(bench.params)
                bar.update()
            if vcd:
                for i, (name, case) in enumerate(CASES.items()):
                    bar.set_description(f"simulate {name} (VCD)")
                    simulate(case(np.random.default_rng(i)), "myhdl", vcd=tmp / "vcd" / f"{name}.vcd")
                    bar.update()
        try:
            table = load_table()
            write_csv(table["rows"], tmp / "resources.csv")
            manifest["estimate"] = estimate(hw or HardwareSpec(), table)
        except FileNotFoundError:
            manifest["estimate"] = None
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")

    try:
        with claim(out_dir, "rtl-export", force=force) as target:  # refused here, before any conversion
            target.commit(fill)
    except InputError:
        raise
    except Exception as exc:
        print(f"rtl export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    files = sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.is_file() and p.name != MARKER)
    replaced = f" (replaced {target.replaced})" if target.replaced else ""
    print(f"wrote {len(files)} files to {out_dir}{replaced}: " + ", ".join(map(str, files)))
    return 0


# ---------------------------------------------------------------------------------------------------
# rtl layer: one decoder layer of one decode step on the integrated top level
# ---------------------------------------------------------------------------------------------------

#: Agreement the paper-size run must reach when the memory cannot be matched cycle for cycle (see
#: ``whole_cycle_memory``): the RTL memory model serves requests first come first served and completes
#: them on whole cycles, while the event model's round-robin channel shares the bandwidth fluidly
#: between requesters and times transfers in fractions of a cycle. Both move the same bytes at the same
#: rate, so the difference is the order in which simultaneous fetches finish, not how long they take.
LAYER_TOLERANCE = 0.01


def whole_cycle_memory(hw) -> bool:
    """Every memory group serves first come first served, moves a whole number of bytes per cycle that
    divides its burst, and has a latency of whole cycles: then the RTL and the event model agree exactly."""
    for g in hw.memory.values():
        rate = g.sustained_Bps / hw.clock_Hz
        latency = g.latency_ns * hw.clock_MHz / 1000
        if (
            g.arbitration != "fifo"
            or rate != int(rate)
            or g.burst_bytes % int(rate)
            or latency != int(latency)
        ):
            return False
    return True


#: The tensors ``rtl layer`` compares, as printed.
TENSOR_NAMES = {
    "qkv": "q, k, v (QKV projection)",
    "att": "att (attention output)",
    "h": "h = x + O(att)",
    "g": "gate",
    "a": "a = silu(gate) * up",
    "d": "d (MLP output)",
    "y": "y = h + d (layer output)",
    "cache": "replay cache after the layer",
    "tas": "TAS score (per entry)",
}


def _print_outputs(outputs: dict | None) -> bool:
    """Print the output comparison; False when a tensor differs or the writer overran."""
    if outputs is None:
        print("  outputs: not compared (--simulator myhdl runs control and timing only)")
        return True
    ok = outputs["overrun"] is None
    if not ok:
        cycle, cores = outputs["overrun"]
        print(
            f"  output writer OVERRUN at cycle {cycle:,} (cores mask {cores:b}): a tile's outputs were lost"
        )
    print("  outputs against the numpy reference (accelerator/rtl/layer_numerics.py):")
    for name, (n, bad) in outputs["tensors"].items():
        ok = ok and bad == 0
        state = "equal" if bad == 0 else f"{bad:,} DIFFER"
        print(f"    {TENSOR_NAMES[name]:<28} {n:>10,} values  {state}")
    if "tas" not in outputs["tensors"]:
        print("    TAS scores: none (the decisions of this step are known in advance)")
    return ok


def rtl_layer(w, step: int | None, layer: int, simulator: str, progress: bool) -> int:
    """Run the layer-step on the top level and on the instruction-level event model; print both."""
    from accelerator.rtl.top_bench import TopError, run_layer
    from cosim.simulate import make_job
    from cosim.traces import load_trace

    v = w.video
    step = v.tokens_per_frame if step is None else step
    if not 0 <= step < v.steps:
        raise InputError(f"--step: {step} is not a decode step of this workload (0 to {v.steps - 1})")
    if not 0 <= layer < w.model.layers:
        raise InputError(f"--layer: {layer} is not a layer of {w.model.name} (0 to {w.model.layers - 1})")
    if w.scheduler.dispatch != "round_robin":
        raise InputError("scheduler.dispatch: the RTL DRS scheduler assigns round robin only")
    if not w.scheduler.layer_barrier:
        raise InputError(
            "scheduler.layer_barrier: false has no layer-step of its own to run on the top level"
        )
    absent = missing("verilator") if simulator == "verilator" else []
    if absent:
        raise InputError(
            "rtl layer needs verilator (apt install verilator), or --simulator myhdl for small layers"
        )
    bundle = load_trace(w, progress=progress)
    job = make_job(w, bundle.trace.replay_cube())

    def say(msg: str) -> None:
        if progress:
            print(f"  {msg}", file=sys.stderr, flush=True)

    try:
        r = run_layer(job, step, layer, simulator=simulator, progress=say, seed=w.simulation.seed)
    except TopError as exc:
        raise InputError(f"{w.name}: {exc}") from None
    exact = whole_cycle_memory(w.hardware)
    tolerance = 0.0 if exact else LAYER_TOLERANCE
    rtl, ev = r["rtl_cycles"], r["cycles"]
    if rtl is None:
        print(
            f"{w.name}: the top level did not finish the layer within {2 * ev + 1000} cycles (event model {ev:,})"
        )
        return 1
    diff = (rtl - ev) / ev
    ends_equal = r["rtl_ends"] == r["expected_ends"]
    ok = abs(diff) <= tolerance
    print(
        f"{w.name}: layer {layer} of decode step {step} (frame {step // v.tokens_per_frame}), "
        f"{w.hardware.name}, {r['words']} instructions"
    )
    print(
        f"  RTL top level ({simulator}):     {rtl:>12,} cycles  (build {r['build_s']:.1f} s, run {r['run_s']:.1f} s)"
    )
    print(f"  event model (instruction): {ev:>12,} cycles")
    print(
        f"  difference: {rtl - ev:+,} cycles ({diff:+.4%}); tolerance {tolerance:.0%} "
        + ("(whole-cycle fifo memory: exact)" if exact else "(fluid round-robin memory in the event model)")
    )
    print(
        f"  record finishes: {'all equal' if ends_equal else 'differ'} "
        f"({len(r['rtl_ends'])} RTL, {len(r['expected_ends'])} event model)"
    )
    ok = _print_outputs(r["outputs"]) and ok
    print(f"  {'agree' if ok else 'DISAGREE'}")
    return 0 if ok else 1
