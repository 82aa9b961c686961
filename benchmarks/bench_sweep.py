"""Points per minute of ``python -m cosim sweep`` on the paper workload (analytic model), with 1 and 2
worker processes, locally and on a Dask LocalCluster of as many single-threaded worker processes: a grid
of cores x lanes x clock x replay ratio, timed end to end (the check of every point before the work, the
points, the result files and the report). The cluster is started before the clock starts.

    python benchmarks/bench_sweep.py                 # the table of docs/performance.md
    python benchmarks/bench_sweep.py --jobs 2 --mode event --clocks 1 --executors local
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "workloads" / "fastcar_vilau7b_u280.yaml"


def sweep_file(folder: Path, mode: str, clocks: int) -> Path:
    spec = {
        "version": 1,
        "name": f"bench_{mode}",
        "base": str(PAPER),
        "fixed": {"simulation.mode": mode},
        "parameters": {
            "hardware.cores": [1, 2, 4],
            "hardware.lanes_per_core": {"range": [128, 512, 128]},
            "hardware.clock_MHz": {"log": [150, 300, clocks]},
            "policy.target_replay_ratio": [0.3, 0.5],
        },
        "objectives": {"latency_s": "min", "energy_j": "min", "luts": "min"},
        "constraints": {"fits_board": True},
    }
    path = folder / f"sweep_{mode}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@contextmanager
def cluster(executor: str, jobs: int):
    """The sweep command's extra arguments: a Dask LocalCluster's address, or none for the local pool."""
    if executor == "local":
        yield []
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield ["--scheduler", c.scheduler_address]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="analytic", choices=("analytic", "event"))
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clocks", type=int, default=8, help="clock points (the grid has 24 x this many points)")
    ap.add_argument("--executors", nargs="+", default=["local", "dask"], choices=("local", "dask"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = sweep_file(folder, args.mode, args.clocks)
        points = 3 * 4 * args.clocks * 2
        print("| mode | executor | jobs | points | wall s | points/min |\n|---|---|---:|---:|---:|---:|")
        for executor in args.executors:
            for jobs in args.jobs:
                with cluster(executor, jobs) as extra:
                    t0 = time.perf_counter()
                    out = folder / f"out_{executor}{jobs}"
                    cmd = [sys.executable, "-m", "cosim", "sweep", str(path), "--out", str(out), "--quiet"]
                    r = subprocess.run(
                        [*cmd, "--jobs", str(jobs), *extra], capture_output=True, text=True, cwd=ROOT
                    )
                    if r.returncode:
                        raise SystemExit(r.stderr)
                    wall = time.perf_counter() - t0
                print(
                    f"| {args.mode} | {executor} | {jobs} | {points} | {wall:.1f} | {60 * points / wall:,.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
