"""Tiny workloads shared by the tests, so the suite stays fast."""

from __future__ import annotations

import copy

TINY = {
    "version": 1,
    "name": "tiny",
    "model": {"preset": "tiny"},
    "video": {"frames": 4, "tokens_per_frame": 16, "prompts": 2, "cfg": True, "prompt_tokens": 4},
    "trace": {"source": "synthetic"},
    "policy": {"kind": "tas", "target_replay_ratio": 0.5},
    "hardware": {"preset": "kv260"},
    "scheduler": {"drs": True, "overhead_cycles": 100},
    "simulation": {"mode": "event", "seed": 0},
    "outputs": {"report": False, "timeline_steps": 2},
}


def compute_bound(raw: dict) -> dict:
    """Memory so fast it never binds: every phase is pure compute, so timings are hand-computable."""
    raw = copy.deepcopy(raw)
    raw["hardware"] = {
        "preset": "kv260",
        "clock_MHz": 100,
        "memory": {"ddr4": {"bandwidth_GBps": 1e9, "efficiency": 1.0}},
    }
    return raw
