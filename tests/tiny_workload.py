"""Tiny workloads shared by the tests, so the suite stays fast."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

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
    """Memory so fast it never binds (and answers at once), and instructions issued in no time: every phase
    is pure compute, so timings are hand-computable (the issue time is tested on its own)."""
    raw = copy.deepcopy(raw)
    raw["hardware"] = {
        "preset": "kv260",
        "clock_MHz": 100,
        "issue_cycles": 0,
        "memory": {"ddr4": {"bandwidth_GBps": 1e9, "efficiency": 1.0, "latency_ns": 0}},
    }
    return raw


#: A live capture of the shipped model, as small as it gets (one prompt with CFG).
TINY_CAPTURE = {
    "version": 1,
    "name": "cap",
    "model": {"preset": "fastcar-tiny"},
    "video": {"frames": 3, "prompts": 1, "cfg": True},
    "trace": {"source": "capture"},
    "policy": {"kind": "tas", "target_replay_ratio": 0.4},
    "hardware": {"preset": "kv260"},
    "outputs": {"report": False, "timeline_steps": 1},
}


def run_tiny_with_report(tmp: Path) -> Path:
    """Run TINY through the CLI with its report on; the run directory."""
    path = tmp / "w.yaml"
    path.write_text(yaml.safe_dump(dict(TINY, outputs={"report": True, "timeline_steps": 1})))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(path), "--out", str(tmp / "run")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return tmp / "run"
