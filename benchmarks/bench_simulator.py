"""Speed and memory of the simulator itself on the paper workload, for each way of running it (analytic,
event model at phase granularity, event model at instruction granularity), and how they grow with the
number of frames. Each measurement runs in a fresh process so peak RSS is its own. ``--simpy`` measures
bare SimPy on this machine, the yardstick for the instruction model's events per second.

    python benchmarks/bench_simulator.py            # the tables of docs/performance.md
    python benchmarks/bench_simulator.py --frames 8 --modes phase instruction
    python benchmarks/bench_simulator.py --simpy
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "workloads" / "fastcar_vilau7b_u280.yaml"


#: What each --modes name runs: (simulation.mode, simulation.granularity).
MODES = {
    "analytic": ("analytic", "phase"),
    "phase": ("event", "phase"),
    "instruction": ("event", "instruction"),
}


def measure(name: str, frames: int) -> dict:
    """One configuration: trace generation, one simulation (the FastCar run), and the dense baseline."""
    sys.path.insert(0, str(ROOT))
    from cosim.config import load_workload
    from cosim.simulate import execute_workload, make_job
    from cosim.traces import load_trace

    mode, granularity = MODES[name]
    # This measures the simulator, not the board: from 16 frames on the KV cache outgrows the U280's 8 GiB
    # HBM, so the capacity (which no timing depends on) is raised to let the long videos through.
    overrides = [
        f"simulation.mode={mode}",
        f"simulation.granularity={granularity}",
        f"video.frames={frames}",
        "hardware.memory.hbm.capacity_GiB=64",
    ]
    w = load_workload(PAPER, overrides)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    bundle = load_trace(w)
    t1 = time.perf_counter()
    job = make_job(w, bundle.trace.replay_cube())
    result = execute_workload(w, job, timeline_steps=w.outputs.timeline_steps)
    t2 = time.perf_counter()
    execute_workload(w, make_job(w, None))
    t3 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    events = (result.machine or {}).get("simpy_events")
    return {
        "mode": name,
        "simpy_events": events,
        "events_per_s": events / (t2 - t1) if events else None,
        "frames": frames,
        "decode_steps": w.video.steps,
        "layer_steps": w.video.steps * w.model.layers,
        "trace_s": t1 - t0,
        "simulate_s": t2 - t1,
        "dense_baseline_s": t3 - t2,
        "total_s": t3 - t0,
        "peak_rss_MiB": rss1 / 1024,
        "peak_rss_growth_MiB": (rss1 - rss0) / 1024,
        "simulated_latency_s": result.latency_s,
    }


def bare_simpy(n: int = 1_000_000) -> dict:
    """SimPy alone on this machine: plain timeouts per second, and items per second through a 4-stage
    pipeline of Resources (request, hold one time unit, release)."""
    import simpy

    env = simpy.Environment()

    def ticker():
        for _ in range(n):
            yield env.timeout(1)

    env.process(ticker())
    t = time.perf_counter()
    env.run()
    timeouts_per_s = n / (time.perf_counter() - t)

    env = simpy.Environment()
    stages = [simpy.Resource(env, capacity=1) for _ in range(4)]
    items = n // 20

    def item():
        for stage in stages:
            with stage.request() as req:
                yield req
                yield env.timeout(1)

    def source():
        for _ in range(items):
            env.process(item())
            yield env.timeout(1)

    env.process(source())
    t = time.perf_counter()
    env.run()
    return {"timeouts_per_s": timeouts_per_s, "pipeline_items_per_s": items / (time.perf_counter() - t)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, nargs="*", default=[8, 16, 32, 64])
    p.add_argument("--modes", nargs="*", default=["phase", "analytic"], choices=sorted(MODES))
    p.add_argument("--simpy", action="store_true", help="measure bare SimPy instead")
    p.add_argument("--one", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.simpy:
        r = bare_simpy()
        print(
            f"bare SimPy: {r['timeouts_per_s']:,.0f} timeouts/s, {r['pipeline_items_per_s']:,.0f} items/s "
            "through a 4-stage Resource pipeline"
        )
        return
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    print(
        "| mode | frames | layer-steps | trace (s) | simulate (s) | dense baseline (s) | total (s) | peak RSS (MiB) "
        "| SimPy events | events/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for frames in args.frames:
            out = subprocess.run(
                [sys.executable, __file__, "--one", mode, str(frames)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout)
            events = f"{r['simpy_events']:,}" if r["simpy_events"] else "-"
            rate = f"{r['events_per_s']:,.0f}" if r["events_per_s"] else "-"
            print(
                f"| {mode} | {frames} | {r['layer_steps']} | {r['trace_s']:.3f} | {r['simulate_s']:.3f} | "
                f"{r['dense_baseline_s']:.3f} | {r['total_s']:.3f} | {r['peak_rss_MiB']:.0f} | {events} | {rate} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
