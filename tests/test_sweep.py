"""Sweeps (cosim/sweep.py): the points a sweep file names, the Pareto front, SQLite results that survive a
SIGKILL, and one clear error for a bad sweep file."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_workload import TINY

import cosim as api
from cosim.sweep import DB, _values, load_sweep, pareto
from cosim.sweep_exec import evaluate


def cosim(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cosim", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def finished(db_path: Path) -> dict:
    """Finished points in a sweep database: key -> metrics JSON (read as another process would)."""
    if not db_path.exists():
        return {}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        try:
            q = "SELECT key, values_json FROM cosim_points WHERE status IN ('done', 'error')"
            return dict(db.execute(q))
        except sqlite3.OperationalError:  # the table is not created yet
            return {}


def killed_midway(path: Path, out: Path, points: int = 2) -> dict:
    """Start ``cosim sweep`` in a real process, SIGKILL it once ``points`` points are recorded; the
    points it left finished."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cosim", "sweep", str(path), "--out", str(out), "--quiet"],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(finished(out / DB)) < points:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return finished(out / DB)


def write_sweep(tmp_path: Path, **over) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    spec = {
        "version": 1,
        "name": "tiny",
        "base": "base.yaml",
        "fixed": {"simulation.mode": "analytic"},
        "parameters": {"hardware.cores": [1, 2], "policy.target_replay_ratio": {"range": [0.25, 0.75, 0.25]}},
        "objectives": {"latency_s": "min", "energy_j": "min"},
        "constraints": {"replay_ratio": {"max": 0.6}},
        **over,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_pareto_front_by_hand():
    # (latency, energy): b dominates d; a, b and c trade one for the other; e ties a and is kept.
    rows = [
        {"n": "a", "lat": 1, "e": 9},
        {"n": "b", "lat": 2, "e": 5},
        {"n": "c", "lat": 6, "e": 1},
        {"n": "d", "lat": 3, "e": 6},
        {"n": "e", "lat": 1, "e": 9},
    ]
    assert [r["n"] for r in pareto(rows, {"lat": "min", "e": "min"})] == ["a", "b", "c", "e"]
    # maximising the second objective instead: a and e (lowest latency, highest energy) beat every other
    assert [r["n"] for r in pareto(rows, {"lat": "min", "e": "max"})] == ["a", "e"]


def test_grid_sweep_runs_every_point_and_writes_the_front(tmp_path):
    path = write_sweep(tmp_path, record=["dense_latency_s"])
    sweep, _ = load_sweep(path)
    assert len(sweep.points()) == 2 * 3  # cores x replay ratios 0.25, 0.5, 0.75
    r = cosim("sweep", path, "--out", tmp_path / "out", "--jobs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6 points run, 0 already done, 0 failed" in r.stdout
    res = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(res) == 6 and set(res["status"]) == {"done"}
    assert list(res["constraints_met"]) == list(res["replay_ratio"] <= 0.6)
    # the front of the feasible points, recomputed from the results table by brute force
    ok = res[res["constraints_met"]]
    front = {
        k
        for k, a in ok.set_index("key").iterrows()
        if not any(
            (b.latency_s <= a.latency_s and b.energy_j <= a.energy_j)
            and (b.latency_s < a.latency_s or b.energy_j < a.energy_j)
            for _, b in ok.iterrows()
        )
    }
    assert set(pd.read_csv(tmp_path / "out" / "pareto.csv")["key"]) == front and front
    assert pd.read_parquet(tmp_path / "out" / "results.parquet").shape == res.shape
    assert (tmp_path / "out" / "report.html").is_file()
    assert (res["dense_latency_s"] > res["latency_s"]).all()  # a recorded metric: replay saves time


def test_quality_objectives_are_the_measured_estimate_at_the_achieved_replay_ratio(tmp_path):
    from cosim.quality_model import estimate

    params = {"policy.kind": ["tas", "random"], "policy.target_replay_ratio": [0.25, 0.5]}
    objectives = {"latency_s": "min", "quality_psnr_db": "max"}
    path = write_sweep(tmp_path, parameters=params, objectives=objectives, record=["replay_ratio"])
    r = cosim("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = pd.read_csv(tmp_path / "out" / "results.csv")
    for _, row in res.iterrows():
        want = estimate(row["policy.kind"], row["replay_ratio"])["quality_psnr_db"]
        assert row["quality_psnr_db"] == pytest.approx(want, rel=1e-12)
    # the random policy loses quality against TAS at the same budget (docs/figures/policies.csv)
    by = res.set_index(["policy.kind", "policy.target_replay_ratio"])["quality_psnr_db"]
    assert by["random", 0.5] < by["tas", 0.5]
    # the report says what these numbers are
    assert "estimate: measured on fastcar-tiny captures" in (tmp_path / "out" / "report.html").read_text()


def test_a_design_whose_data_do_not_fit_is_recorded_as_infeasible(tmp_path):
    """``run`` refuses such a design; a sweep runs it and says it does not fit (fits_memory)."""
    params = {"hardware.memory.ddr4.capacity_GiB": [4, 0.0001]}
    path = write_sweep(tmp_path, parameters=params, constraints={}, record=["kv_cache_GiB", "weights_GiB"])
    r = cosim("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = pd.read_csv(tmp_path / "out" / "results.csv").set_index("hardware.memory.ddr4.capacity_GiB")
    assert list(res.loc[[4, 0.0001], "fits_memory"]) == [True, False]
    assert list(res.loc[[4, 0.0001], "constraints_met"]) == [True, False]
    need = res.loc[4, "kv_cache_GiB"] + res.loc[4, "weights_GiB"]
    assert 0.0001 < need < 4  # the capacities straddle what the design holds
    assert list(pd.read_csv(tmp_path / "out" / "pareto.csv")["hardware.memory.ddr4.capacity_GiB"]) == [4]


def test_a_parameter_mixing_scalars_and_lists_is_written_as_json(tmp_path):
    """One threshold for every layer, or one per layer: both are values of ``policy.threshold``."""
    layers = api.load(TINY).model.layers
    values = [0.5, [0.25] * layers]
    fixed = {"simulation.mode": "analytic", "policy.target_replay_ratio": None}
    path = write_sweep(tmp_path, fixed=fixed, parameters={"policy.threshold": values}, constraints={})
    r = cosim("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    got = [json.loads(v) for v in res["policy.threshold"]]  # rows come in key (workload hash) order
    assert sorted(got, key=json.dumps) == sorted(values, key=json.dumps)
    assert list(res.columns[:4]) == ["key", "stage", "policy.threshold", "status"]
    front = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert set(front["policy.threshold"]) <= {json.dumps(v) for v in values}


def test_ranges_give_the_values_a_user_wrote():
    """Decimal steps and log ranges between whole numbers come out as written: a lanes count of
    511.99999999999955 would be refused as a workload, and 0.30000000000000004 reads badly in a table."""
    assert _values("x", {"range": [0.1, 0.8, 0.1]}) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert _values("x", {"log": [128, 4096, 6]}) == [128, 256, 512, 1024, 2048, 4096]
    assert all(type(v) is int for v in _values("x", {"log": [128, 4096, 6]}))
    assert _values("x", {"log": [100, 400, 3]}) == [100, 200, 400]
    assert _values("x", {"log": [100, 400, 5]})[1] == pytest.approx(100 * 2**0.5, rel=1e-11)


def test_write_front_writes_a_run_per_pareto_point_and_the_report_links_them(tmp_path):
    from cosim.outdir import owned_by_tool

    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    r = cosim("sweep", path, "--out", out, "--write-front", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    front = list(pd.read_csv(out / "pareto.csv")["key"])
    assert front and sorted(p.name for p in (out / "runs").iterdir()) == sorted(front)
    res = pd.read_csv(out / "results.csv").set_index("key")
    html = (out / "report.html").read_text()
    for key in front:
        summary = json.loads((out / "runs" / key / "summary.json").read_text())
        assert summary["latency_s"] == pytest.approx(res.loc[key, "latency_s"], rel=1e-12)
        assert f'href="runs/{key}/' in html  # the tiny workload writes no run report: the folder
    # still a sweep directory the tool owns: it can be started over
    assert owned_by_tool(out, "sweep")
    r = cosim("sweep", path, "--out", out, "--force", cwd=tmp_path)
    assert r.returncode == 0, r.stderr and not (out / "runs").exists()


def test_random_strategy_draws_distinct_points_reproducibly(tmp_path):
    path = write_sweep(tmp_path, strategy={"kind": "random", "samples": 4, "seed": 3})
    a, b = load_sweep(path)[0].points(), load_sweep(path)[0].points()
    assert a == b and len(a) == 4 and len({json.dumps(p, sort_keys=True) for p in a}) == 4


def test_a_killed_sweep_resumes_without_losing_or_repeating_a_point(tmp_path):
    """SIGKILL a real sweep process mid-way (event mode: a point takes a while), then --resume."""
    params = {"hardware.cores": [1, 2, 3, 4], "policy.target_replay_ratio": [0.2, 0.4, 0.6]}
    path = write_sweep(tmp_path, fixed={"simulation.mode": "event"}, parameters=params, constraints={})
    out = tmp_path / "out"
    done_before = killed_midway(path, out)
    assert 2 <= len(done_before) < 12
    r = cosim("sweep", path, "--out", out, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{12 - len(done_before)} points run, {len(done_before)} already done, 0 failed" in r.stdout
    after = finished(out / DB)
    assert len(after) == 12
    assert all(after[k] == v for k, v in done_before.items())  # finished points kept as they were


@pytest.mark.parametrize(
    "over, message",
    [
        ({"colour": "red"}, "colour: not a sweep key"),
        ({"objectives": {"latency_s": "lowest"}}, "objectives.latency_s: min or max"),
        ({"parameters": {"hardware.cores": {"range": [4, 1, 1]}}}, "parameters.hardware.cores.range"),
        ({"parameters": {"hardware.cores": [2, 0]}}, "hardware.cores"),
        ({"strategy": {"kind": "random"}}, "strategy.samples"),
        ({"base": "missing.yaml"}, "base: missing.yaml"),
        ({"parameters": {"hardware.clock_MHz": {"range": [100, 300, 1e-9]}}}, "at most 1,000,000"),
        ({"strategy": {"kind": "optuna"}}, "strategy.trials"),
        ({"strategy": {"kind": "optuna", "trials": 5, "sampler": "cmaes"}}, "strategy.sampler"),
        ({"strategy": {"kind": "grid", "trials": 5}}, "strategy.trials: not a setting of a grid strategy"),
        (
            {"confirm": {"simulation.mode": "analytic"}},
            "confirm: {'simulation.mode': 'analytic'} changes nothing",
        ),
        ({"confirm": {"hardware.cores": 0}}, "confirm: "),
        ({"record": ["latency"]}, "record.latency: not a metric"),
        ({"record": ["breakdown_s"]}, "record.breakdown_s: a table of values, not one number"),
    ],
)
def test_bad_sweep_file_is_one_message_and_exit_2(tmp_path, over, message):
    path = write_sweep(tmp_path, **over)
    r = cosim("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_metric_fails_before_any_point_runs(tmp_path):
    path = write_sweep(tmp_path, objectives={"latency": "min"})
    r = cosim("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2 and "objectives.latency: not a metric" in r.stderr, r.stderr


def test_reused_traces_and_baselines_give_the_numbers_of_independent_runs():
    """Within a worker, points that share a trace (hardware varies) or a dense baseline (the policy
    varies) reuse it: every metric must equal a fresh ``cosim.run`` of the same point."""
    metrics = ["latency_s", "dense_latency_s", "energy_j", "dense_energy_j", "replay_ratio"]
    points = [
        {"hardware.cores": c, "policy.target_replay_ratio": r, "simulation.mode": m}
        for m in ("analytic", "event")
        for c in (1, 2)
        for r in (0.3, 0.6)
    ]
    for point in points:
        got = evaluate(TINY, point, metrics)
        want = api.run(api.load(TINY, point)).summary
        for m in metrics:
            assert got[m] == pytest.approx(want[m], rel=1e-12), (point, m)
