"""Summary keys the run report draws on: per-core busy time over the decode, what DRS bought, the dense
energy breakdown; and every summary key defined in docs/metrics.md."""

import re
from pathlib import Path

import numpy as np
import pytest
from tiny_workload import TINY

from cosim.api import load
from cosim.simulate import execute_workload, make_job, simulate
from cosim.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
DRS_KEYS = {"drs_off_latency_s", "drs_gain", "drs_off_core_busy_s", "drs_off_core_imbalance"}


def run(overrides=None, **kw):
    w = load(TINY, overrides or {})
    return simulate(w, load_trace(w), **kw)


@pytest.mark.parametrize("mode", ["event", "analytic"])
def test_drs_off_latency_is_a_separate_simulation_with_drs_off(mode):
    r = run({"simulation.mode": mode})
    s = r.summary
    off = run({"simulation.mode": mode, "scheduler.drs": False}).summary
    assert s["drs_off_latency_s"] == off["latency_s"] and s["drs_off_core_busy_s"] == off["core_busy_s"]
    assert s["drs_gain"] == s["drs_off_latency_s"] / s["latency_s"]
    assert s["drs_off_core_imbalance"] == off["core_imbalance"]
    for key in ("core_imbalance", "drs_off_core_imbalance"):
        busy = s["core_busy_s" if key == "core_imbalance" else "drs_off_core_busy_s"]
        assert s[key] >= 1 and s[key] == pytest.approx(max(busy) / np.mean(busy))
    assert "drs_comparison" not in s  # a flag, not a metric


def test_drs_comparison_only_when_asked_and_meaningful():
    assert set(run().summary) >= DRS_KEYS  # default for run: on
    assert not DRS_KEYS & set(run(drs_comparison=False).summary)  # a sweep's default: off
    assert set(run({"outputs.drs_comparison": True}, drs_comparison=False).summary) >= DRS_KEYS
    assert not DRS_KEYS & set(run({"outputs.drs_comparison": False}).summary)
    assert not DRS_KEYS & set(run({"scheduler.drs": False}).summary)  # nothing to compare
    assert not DRS_KEYS & set(run({"policy.kind": "dense", "policy.target_replay_ratio": None}).summary)


def test_sweep_points_do_not_pay_for_the_drs_comparison(monkeypatch):
    from cosim import simulate as sim
    from cosim.sweep_exec import evaluate

    calls = []
    real = sim.execute_workload
    monkeypatch.setattr(
        sim, "execute_workload", lambda w, *a, **k: calls.append(w.scheduler.drs) or real(w, *a, **k)
    )
    evaluate(TINY, {"hardware.cores": 2, "policy.target_replay_ratio": 0.31}, ["latency_s"])
    assert False not in calls  # no DRS-off run (the dense baseline keeps the workload's scheduler)
    calls.clear()
    evaluate(TINY, {"policy.target_replay_ratio": 0.32, "outputs.drs_comparison": True}, ["drs_gain"])
    assert calls.count(False) == 1  # asked for: one more simulation


@pytest.mark.parametrize(
    "mode, granularity", [("event", "phase"), ("analytic", "phase"), ("event", "instruction")]
)
def test_per_step_core_busy_adds_up_to_the_totals(mode, granularity):
    w = load(TINY, {"simulation.mode": mode, "simulation.granularity": granularity})
    r = execute_workload(w, make_job(w, load_trace(w).trace.replay_cube()))
    steps = w.video.steps
    assert r.core_step_busy_s.shape == (steps, w.hardware.cores) and r.step_end_s.shape == (steps,)
    assert np.allclose(r.core_step_busy_s.sum(axis=0), r.core_busy_s, rtol=1e-12)
    assert (np.diff(r.step_end_s) > 0).all() and r.step_end_s[-1] <= r.latency_s
    # the instruction machine's latency adds the sequencer's last issue cycle
    assert r.step_end_s[-1] == pytest.approx(r.latency_s, rel=1e-5)
    if granularity == "phase":  # the layer barrier: a core is busy within its step only
        duration = np.diff(np.concatenate([[0.0], r.step_end_s]))
        assert (r.core_step_busy_s <= duration[:, None] * (1 + 1e-12)).all()


def test_event_and_analytic_agree_per_step_when_compute_bound():
    from tiny_workload import compute_bound

    got = []
    for mode in ("event", "analytic"):
        w = load(compute_bound(TINY), {"simulation.mode": mode})
        got.append(execute_workload(w, make_job(w, load_trace(w).trace.replay_cube())))
    assert np.allclose(got[0].core_step_busy_s, got[1].core_step_busy_s, rtol=1e-9)
    assert np.allclose(got[0].step_end_s, got[1].step_end_s, rtol=1e-9)


def test_dense_energy_breakdown_adds_up_and_cores_table():
    r = run()
    s = r.summary
    assert sum(s["dense_energy_breakdown_j"].values()) == pytest.approx(s["dense_energy_j"], rel=1e-12)
    assert s["dense_energy_breakdown_j"]["tas_dynamic"] == 0 < s["energy_breakdown_j"]["tas_dynamic"]
    cores = r.cores
    assert len(cores) == r.workload.video.steps and list(cores.columns[:4]) == [
        "step",
        "frame",
        "start_s",
        "end_s",
    ]
    assert cores["frame"].iloc[-1] == r.workload.video.frames - 1
    assert np.allclose(cores[["core0_busy_s", "core1_busy_s"]].sum(), s["core_busy_s"])
    dense_layers = r.layers["dense_total_s"]
    assert dense_layers.sum() == pytest.approx(s["dense_latency_s"] - s["dense_breakdown_s"]["extra"])


def documented_summary_keys() -> set[str]:
    """Backticked names in the first column of docs/metrics.md's summary.json table."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    table = text.split("## summary.json", 1)[1].split("\n### ", 1)[0]
    keys = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([a-z_0-9A-Z]+)`", line.split("|")[1]))
    return keys


def test_every_summary_key_is_documented():
    documented = documented_summary_keys()
    summaries = [
        run({"sparse_attention.window": 8}).summary,  # full-attention keys, the DRS comparison
        run({"simulation.granularity": "instruction"}).summary,  # machine
        run({"simulation.mode": "analytic"}).summary,
    ]
    for s in summaries:
        missing = set(s) - documented - {"quality"}
        assert not missing, f"summary keys not in docs/metrics.md: {sorted(missing)}"
    assert "speedup_vs_dense_full_attention" in summaries[0] and "machine" in summaries[1]


def test_sparse_attention_run_prints_and_reports_the_full_attention_speedup(tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    raw = dict(
        TINY, sparse_attention={"sink_tokens": 2, "window": 8}, outputs={"report": True, "timeline_steps": 1}
    )
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(tmp_path / "w.yaml"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    full = s["speedup_vs_dense_full_attention"]
    assert full > s["speedup_vs_dense"]  # full attention is the slower baseline
    assert f"{full:.3f}x vs dense with full attention" in r.stdout
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Speedup vs dense, full attention" in page and f"{full:.3f}x" in page
    assert "the first 2 (sink) tokens and the last 8 tokens" in page
