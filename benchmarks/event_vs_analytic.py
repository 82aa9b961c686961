"""Where the event model and the analytic model differ, and by how much (docs/cost_model.md).

python benchmarks/event_vs_analytic.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosim.config import WORKLOADS_DIR, load_workload, resolve  # noqa: E402
from cosim.simulate import execute, make_job  # noqa: E402
from cosim.traces import load_trace  # noqa: E402

#: The tests' tiny case: memory-bound on the KV260's single DDR4 channel.
TINY_ON_KV260 = {
    "version": 1,
    "model": {"preset": "tiny"},
    "video": {"frames": 4, "tokens_per_frame": 16, "prompts": 2, "cfg": True, "prompt_tokens": 4},
    "policy": {"kind": "tas", "target_replay_ratio": 0.5},
    "hardware": {"preset": "kv260"},
    "scheduler": {"overhead_cycles": 100},
}
COMPUTE_BOUND = {"clock_MHz": 100, "memory": {"ddr4": {"bandwidth_GBps": 1e9, "efficiency": 1.0}}}


def gap(w) -> float:
    job = make_job(w, load_trace(w).trace.replay_cube())
    return execute(job, "event").latency_s / execute(job, "analytic").latency_s - 1


def main() -> None:
    cases = []
    for cores in (1, 2, 3):
        raw = {**TINY_ON_KV260, "hardware": {"preset": "kv260", **COMPUTE_BOUND}}
        cases.append((f"tiny, compute-bound, {cores} core(s)", resolve(raw, [f"hardware.cores={cores}"])))
    for cores, drs in ((1, "true"), (2, "true"), (3, "false")):
        w = resolve(TINY_ON_KV260, [f"hardware.cores={cores}", f"scheduler.drs={drs}"])
        cases.append((f"tiny, KV260 memory-bound, {cores} core(s), DRS {drs}", w))
    cases.append(("paper workload (U280)", load_workload(WORKLOADS_DIR / "fastcar_vilau7b_u280.yaml")))
    for name, w in cases:
        print(f"{name:45s} event / analytic - 1 = {gap(w):+.3g}")


if __name__ == "__main__":
    main()
