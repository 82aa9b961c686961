"""Speed and memory of the simulator itself on the paper workload, in event and analytic mode, and how
both grow with the number of frames. Each measurement runs in a fresh process so peak RSS is its own.

    python benchmarks/bench_simulator.py            # the table of docs/performance.md
    python benchmarks/bench_simulator.py --frames 8 --modes event
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


def measure(mode: str, frames: int) -> dict:
    """One configuration: trace generation, one simulation (the FastCar run), and the dense baseline."""
    sys.path.insert(0, str(ROOT))
    from cosim.config import load_workload
    from cosim.simulate import execute, make_job
    from cosim.sources import load_trace

    # This measures the simulator, not the board: from 16 frames on the KV cache outgrows the U280's 8 GiB
    # HBM, so the capacity (which no timing depends on) is raised to let the long videos through.
    overrides = [f"simulation.mode={mode}", f"video.frames={frames}", "hardware.memory.hbm.capacity_GiB=64"]
    w = load_workload(PAPER, overrides)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    bundle = load_trace(w)
    t1 = time.perf_counter()
    job = make_job(w, bundle.trace.replay_cube())
    result = execute(job, mode, timeline_steps=w.outputs.timeline_steps)
    t2 = time.perf_counter()
    execute(make_job(w, None), mode)
    t3 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, nargs="*", default=[8, 16, 32, 64])
    p.add_argument("--modes", nargs="*", default=["event", "analytic"])
    p.add_argument("--one", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    print(
        "| mode | frames | layer-steps | trace (s) | simulate (s) | dense baseline (s) | total (s) | peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for frames in args.frames:
            out = subprocess.run(
                [sys.executable, __file__, "--one", mode, str(frames)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout)
            print(
                f"| {mode} | {frames} | {r['layer_steps']} | {r['trace_s']:.3f} | {r['simulate_s']:.3f} | "
                f"{r['dense_baseline_s']:.3f} | {r['total_s']:.3f} | {r['peak_rss_MiB']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
