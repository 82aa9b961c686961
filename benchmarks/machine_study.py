"""What the instruction-level machine changes on the paper workload (docs/machine_study.md).

Each variant is the paper workload (workloads/fastcar_vilau7b_u280.yaml) with a few ``--set`` items,
simulated at instruction granularity (FastCar run, and for a few key variants its dense baseline) and,
where the option exists there, at phase granularity (FastCar run and dense baseline; phase costs about a
second). Deterministic: the synthetic trace has a fixed seed and both models are deterministic. Progress
goes to stderr, the markdown tables to stdout.

    python benchmarks/machine_study.py                       # every group at 8 frames (~18 min, one core)
    python benchmarks/machine_study.py --groups drs,barrier  # some groups only
    python benchmarks/machine_study.py --frames 4 --json /tmp/study.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosim.config import WORKLOADS_DIR, load_workload  # noqa: E402
from cosim.simulate import energy_j, execute_workload, make_job  # noqa: E402
from cosim.traces import load_trace  # noqa: E402

PAPER = WORKLOADS_DIR / "fastcar_vilau7b_u280.yaml"
INSTRUCTION = "simulation.granularity=instruction"
#: The U280 design the study was run on (docs/machine_study.md): the preset before its four-row calibration.
DESIGN = (
    "hardware.cores=2",
    "hardware.clock_MHz=209.49",
    "hardware.power.static_W=18.48",
    "hardware.weight_buffer_KiB=8192",
)
#: The memory-bound contrast: HBM at 20 GB/s peak (14 GB/s sustained) instead of 460.
SLOW_HBM = ("hardware.memory.hbm.bandwidth_GBps=20",)


@dataclass(frozen=True)
class Variant:
    group: str
    label: str
    sets: tuple[str, ...] = ()
    phase: bool = True  # the option exists at phase granularity: run it there too
    instr_dense: bool = False  # also run the dense baseline at instruction granularity


VARIANTS = [
    Variant("baseline", "paper workload (defaults)", (), instr_dense=True),
    # buffer depth
    Variant("buffers", "weight_buffers=1", ("hardware.weight_buffers=1",), phase=False),
    Variant("buffers", "weight_buffers=3", ("hardware.weight_buffers=3",), phase=False),
    Variant("buffers", "weight_buffer_KiB=2048", ("hardware.weight_buffer_KiB=2048",)),
    Variant("buffers", "weight_buffer_KiB=32768", ("hardware.weight_buffer_KiB=32768",), instr_dense=True),
    Variant("buffers", "input_buffers=1", ("hardware.input_buffers=1",)),
    Variant("buffers", "input_write_elems_per_cycle=8", ("hardware.input_write_elems_per_cycle=8",)),
    # memory latency (100 ns is the baseline)
    Variant("latency", "hbm latency_ns=0", ("hardware.memory.hbm.latency_ns=0",), phase=False),
    Variant("latency", "hbm latency_ns=1000", ("hardware.memory.hbm.latency_ns=1000",), phase=False),
    Variant("latency", "ddr4 latency_ns=0", ("hardware.memory.ddr4.latency_ns=0",), phase=False),
    Variant("latency", "ddr4 latency_ns=1000", ("hardware.memory.ddr4.latency_ns=1000",), phase=False),
    # arbitration, dispatch rule, barrier, queue depth
    Variant("arbitration", "hbm arbitration=fifo", ("hardware.memory.hbm.arbitration=fifo",), phase=False),
    Variant("dispatch", "dispatch=least_loaded", ("scheduler.dispatch=least_loaded",), phase=False),
    Variant(
        "barrier", "layer_barrier=false", ("scheduler.layer_barrier=false",), phase=False, instr_dense=True
    ),
    Variant("queue", "queue_depth=1", ("hardware.queue_depth=1",), phase=False),
    Variant("queue", "queue_depth=4", ("hardware.queue_depth=4",), phase=False),
    # weight dataflow
    Variant(
        "dataflow",
        "weights_shared_across_batch=false",
        ("hardware.weights_shared_across_batch=false",),
        instr_dense=True,
    ),
    # DRS (a dense run never schedules, so its dense baseline is the default one, simulated once)
    Variant("drs", "drs=false", ("scheduler.drs=false",), instr_dense=True),
    # a memory-bound contrast
    Variant("memory_bound", "HBM 20 GB/s", SLOW_HBM, instr_dense=True),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, weight_buffers=1",
        SLOW_HBM + ("hardware.weight_buffers=1",),
        phase=False,
    ),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, weight_buffers=3",
        SLOW_HBM + ("hardware.weight_buffers=3",),
        phase=False,
    ),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, hbm latency_ns=1000",
        SLOW_HBM + ("hardware.memory.hbm.latency_ns=1000",),
        phase=False,
    ),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, hbm arbitration=fifo",
        SLOW_HBM + ("hardware.memory.hbm.arbitration=fifo",),
        phase=False,
    ),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, layer_barrier=false",
        SLOW_HBM + ("scheduler.layer_barrier=false",),
        phase=False,
    ),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, dispatch=least_loaded",
        SLOW_HBM + ("scheduler.dispatch=least_loaded",),
        phase=False,
    ),
    Variant(
        "memory_bound", "HBM 20 GB/s, queue_depth=1", SLOW_HBM + ("hardware.queue_depth=1",), phase=False
    ),
    Variant("memory_bound", "HBM 20 GB/s, drs=false", SLOW_HBM + ("scheduler.drs=false",), instr_dense=True),
    Variant(
        "memory_bound",
        "HBM 20 GB/s, weights_shared_across_batch=false",
        SLOW_HBM + ("hardware.weights_shared_across_batch=false",),
        instr_dense=True,
    ),
]
GROUPS = list(dict.fromkeys(v.group for v in VARIANTS))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(sets: list[str], dense: bool) -> dict:
    """One simulation: the FastCar run of the workload with ``sets``, or its dense baseline."""
    w = load_workload(PAPER, [*DESIGN, *sets])
    replay = None if dense else load_trace(w).trace.replay_cube()
    t0 = time.perf_counter()
    r = execute_workload(w, make_job(w, replay))
    wall = time.perf_counter() - t0
    energy = energy_j(w, r)
    out = {
        "latency_s": r.latency_s,
        "energy_j": energy,
        "tokens_per_j": w.video.batch * w.video.steps / energy,
        "hbm_bytes": r.bytes_by_group.get("hbm", 0.0),
        "ddr4_bytes": r.bytes_by_group.get("ddr4", 0.0),
        "core_busy_s": float(r.core_busy_s.sum()),
        "breakdown_s": r.breakdown_s,
        "wall_s": wall,
    }
    if r.machine and r.machine.get("granularity") == "instruction":
        m = r.machine
        out.update(
            instructions=m["instructions"],
            simpy_events=m["simpy_events"],
            dispatch_stall_s=m["dispatch_stall_s"],
            core_wait_s=list(m["core_wait_s"]),
            channel_busy_s=dict(m["channel_busy_s"]),
        )
    return out


def run(variants: list[Variant], frames: int) -> list[dict]:
    base = [f"video.frames={frames}"]
    cache: dict = {}  # (granularity, sets, dense) -> result; the dense baseline is shared where it can be

    def once(kind: str, sets: tuple[str, ...], dense: bool, label: str) -> dict:
        # DRS does not act in a dense run (nothing replays), so drs=false has the same dense baseline.
        key_sets = tuple(s for s in sets if not (dense and s == "scheduler.drs=false"))
        key = (kind, key_sets, dense)
        if key not in cache:
            extra = [INSTRUCTION] if kind == "instruction" else []
            log(f"  {label}: {kind}{' dense' if dense else ''} ...")
            cache[key] = measure(base + extra + list(key_sets), dense)
            log(f"    {cache[key]['latency_s']:.2f} s simulated, {cache[key]['wall_s']:.1f} s wall")
        return cache[key]

    rows = []
    for i, v in enumerate(variants, 1):
        log(f"[{i}/{len(variants)}] {v.group}: {v.label}")
        row = {"group": v.group, "label": v.label, "sets": list(v.sets)}
        row["instr"] = once("instruction", v.sets, False, v.label)
        if v.instr_dense:
            row["instr_dense"] = once("instruction", v.sets, True, v.label)
        if v.phase:
            row["phase"] = once("phase", v.sets, False, v.label)
            row["phase_dense"] = once("phase", v.sets, True, v.label)
        rows.append(row)
    return rows


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "" if x is None else format(x, fmt)


def table(rows: list[dict]) -> str:
    """One markdown table per group: FastCar at instruction granularity against the instruction baseline of
    its kind (the paper workload, or the memory-bound contrast), and the phase number where it exists."""
    bases = {"memory_bound": next((r for r in rows if r["sets"] == list(SLOW_HBM)), None)}
    default = next((r for r in rows if r["group"] == "baseline"), None)
    out = []
    head = (
        "| variant | phase (s) | phase speedup | instruction (s) | vs instr. baseline | instr. speedup "
        "| HBM (TB) | energy (J) | tokens/J | dispatch stall (s) | core wait (s) | instructions (M) | wall (s) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for group in dict.fromkeys(r["group"] for r in rows):
        base = bases.get(group, default)
        out += [f"\n### {group}\n", head]
        for r in (x for x in rows if x["group"] == group):
            ins, ph, ph_d, ins_d = r["instr"], r.get("phase"), r.get("phase_dense"), r.get("instr_dense")
            delta = "" if base is None else f"{ins['latency_s'] / base['instr']['latency_s'] - 1:+.2%}"
            out.append(
                f"| {r['label']} | {_num(ph and ph['latency_s'])} "
                f"| {_num(ph and ph_d['latency_s'] / ph['latency_s'], '.3f')} | {ins['latency_s']:.1f} | {delta} "
                f"| {_num(ins_d and ins_d['latency_s'] / ins['latency_s'], '.3f')} | {ins['hbm_bytes'] / 1e12:.2f} "
                f"| {ins['energy_j']:,.0f} | {ins['tokens_per_j']:.3f} | {ins['dispatch_stall_s']:.1f} "
                f"| {sum(ins['core_wait_s']):.1f} | {ins['instructions'] / 1e6:.2f} | {ins['wall_s']:.0f} |"
            )
    dense = [(r, k) for r in rows for k in ("phase_dense", "instr_dense") if k in r]
    seen, lines = set(), []
    for r, k in dense:
        key = (tuple(s for s in r["sets"] if s != "scheduler.drs=false"), k)
        if key in seen:
            continue
        seen.add(key)
        d = r[k]
        lines.append(
            f"| {r['label']} | {'phase' if k == 'phase_dense' else 'instruction'} | {d['latency_s']:.1f} "
            f"| {d['hbm_bytes'] / 1e12:.2f} | {d['energy_j']:,.0f} | {d['tokens_per_j']:.3f} |"
        )
    out += [
        "\n### dense baselines\n",
        "| variant | granularity | dense (s) | HBM (TB) | energy (J) | tokens/J |\n|---|---|---|---|---|---|",
        *lines,
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=8, help="video.frames (the paper: 8)")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated, of {', '.join(GROUPS)}")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    groups = args.groups.split(",")
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    # The baselines the other rows are compared with always run.
    wanted = set(groups) | {"baseline"}
    variants = [v for v in VARIANTS if v.group in wanted]
    t0 = time.perf_counter()
    rows = run(variants, args.frames)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"frames": args.frames, "rows": rows}, indent=1))
    print(f"Paper workload at video.frames={args.frames}; FastCar runs unless a table says dense.")
    print(table(rows))


if __name__ == "__main__":
    main()
