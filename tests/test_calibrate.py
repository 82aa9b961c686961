"""``python -m cosim calibrate`` (cosim/calibrate.py): it recovers parameters the simulator itself was run
with from noisy rows, says what the rows cannot identify, and refuses bad calibration files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tiny_workload import TINY

import cosim

#: The ground truth: a KV260-like design the rows are simulated on.
TRUTH = {"hardware.clock_MHz": 150.0, "hardware.power.static_W": 3.0, "hardware.cores": 2}
ROWS = {
    "dense": {"policy.kind": "dense"},
    "r25": {"policy.target_replay_ratio": 0.25},
    "r50": {"policy.target_replay_ratio": 0.5},
    "r75": {"policy.target_replay_ratio": 0.75},
}
FREE = {
    "hardware.clock_MHz": {"bounds": [50, 400]},
    "hardware.power.static_W": {"bounds": [0.5, 20]},
    "hardware.cores": {"choices": [1, 2, 3]},
}


def calibrate(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cosim", "calibrate", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def write_calibration(tmp_path: Path, noise: float = 0.005, metrics=("latency_s", "tokens_per_j"), **over):
    """Rows measured on the simulator at TRUTH, each number off by a seeded relative noise of ``noise``."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    rng = np.random.default_rng(0)
    rows = {}
    for name, o in ROWS.items():
        s = cosim.run(cosim.load(TINY, {**TRUTH, **o, "simulation.mode": "analytic"})).summary
        measured = {m: float(s[m] * (1 + noise * rng.standard_normal())) for m in metrics}
        rows[name] = {"overrides": o, "measured": measured}
    spec = {
        "version": 1,
        "name": "synthetic",
        "base": "base.yaml",
        "fixed": {"simulation.mode": "analytic"},
        "rows": rows,
        "parameters": FREE,
        **over,
    }
    path = tmp_path / "calib.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_it_recovers_the_parameters_noisy_rows_were_simulated_with(tmp_path):
    path = write_calibration(tmp_path)
    r = calibrate(path, "--out", tmp_path / "out", "--profile-points", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    best = fit["best"]
    assert best["hardware.cores"] == 2
    assert best["hardware.clock_MHz"] == pytest.approx(150.0, rel=0.02)
    assert best["hardware.power.static_W"] == pytest.approx(3.0, rel=0.03)
    # 0.5% noise on each number: the fit and the held-out predictions are within a few times that
    assert fit["rms_rel_error"] < 0.01 and fit["loo_max_abs_rel_error"] < 0.02
    assert fit["identification"]["not_identified"] == []
    res = pd.read_csv(tmp_path / "out" / "residuals.csv")
    assert len(res) == 8 and (res["rel_error"].abs() < 0.015).all()
    loo = pd.read_csv(tmp_path / "out" / "leave_one_out.csv")
    assert set(loo["row"]) == set(ROWS) and len(loo) == 8
    # the fitted preset is a hardware section that reproduces the fit's numbers
    preset = yaml.safe_load((tmp_path / "out" / "preset.yaml").read_text())
    w = cosim.load({**TINY, "hardware": preset["hardware"], "simulation": {"mode": "analytic", "seed": 0}})
    assert w.hardware.clock_MHz == pytest.approx(best["hardware.clock_MHz"], rel=1e-12)
    dense = cosim.run(
        cosim.load({**TINY, "hardware": preset["hardware"]}, {**ROWS["dense"], "simulation.mode": "analytic"})
    )
    got = res[(res["row"] == "dense") & (res["metric"] == "latency_s")]["simulated"].item()
    assert dense.summary["latency_s"] == pytest.approx(got, rel=1e-12)


def test_what_the_rows_cannot_identify_is_said(tmp_path):
    """Latency alone says nothing about static power: its profile is flat, and a single row measured
    once with two free parameters proves little."""
    path = write_calibration(tmp_path, metrics=("latency_s",))
    spec = yaml.safe_load(path.read_text())
    spec["rows"] = {"dense": spec["rows"]["dense"]}
    spec["parameters"] = {k: v for k, v in FREE.items() if k != "hardware.cores"}
    path.write_text(yaml.safe_dump(spec))
    r = calibrate(path, "--out", tmp_path / "out", "--profile-points", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert fit["identification"]["not_identified"] == ["hardware.power.static_W"]
    assert "proves little" in fit["identification"]["note"] and "proves little" in r.stdout
    lo, hi = fit["near_equivalent"]["ranges"]["hardware.power.static_W"]
    assert hi - lo > 10  # static power anywhere in its bounds fits equally well


@pytest.mark.parametrize(
    "over, message",
    [
        ({"colour": 1}, "colour: not a calibration key"),
        ({"parameters": {"hardware.clock_MHz": {"bounds": [400, 50]}}}, "parameters.hardware.clock_MHz.bounds: low < high"),
        ({"parameters": {"hardware.clock_MHz": [1, 2]}}, "parameters.hardware.clock_MHz: {bounds"),
        ({"parameters": {"hardware.cores": {"choices": [2, 0]}}}, "with hardware.cores = 0"),
        ({"rows": {"dense": {"measured": {"latency": 1.0}}}}, "rows.dense.measured.latency: not a numeric metric"),
        ({"rows": {"dense": {"measured": {"latency_s": 0}}}}, "rows.dense.measured.latency_s: 0"),
        ({"rows": {"dense": {"overrides": {"policy.kind": "nope"}, "measured": {"latency_s": 1}}}}, "rows.dense"),
        ({"objective": {"weights": {"energy_j": 1}}}, "objective.weights.energy_j: no row measures it"),
        ({"base": "missing.yaml"}, "base: missing.yaml"),
        ({"method": {"starts": -1}}, "method.starts: a whole number from 0 to 256"),
        ({"method": {"max_evaluations": 0}}, "method.max_evaluations: a whole number from 1"),
        ({"parameters": {"hardware.clock_MHz": {"bounds": [50, 400], "start": 500}}}, "clock_MHz.start: 500 is outside"),
    ],
)  # fmt: skip
def test_bad_calibration_file_is_one_message_and_exit_2(tmp_path, over, message):
    path = write_calibration(tmp_path, **over)
    r = calibrate(path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_held_parameters_budget_and_parallel_rows_give_the_same_fit(tmp_path):
    """--set holds a free parameter; method.max_evaluations caps the simulated parameter sets per discrete
    choice; --jobs 2 runs the rows in two processes and changes nothing in the result."""
    path = write_calibration(tmp_path, method={"max_evaluations": 40})
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        r = calibrate(
            path, "--out", out, "--set", "hardware.cores=2", "--jobs", jobs, "--no-loo", cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
        outs[jobs] = json.loads((out / "fit.json").read_text())
    assert outs[1] == outs[2]
    fit = outs[1]
    assert "hardware.cores" not in fit["best"] and fit["identification"]["free_parameters"] == 2
    assert fit["best"]["hardware.clock_MHz"] == pytest.approx(150.0, rel=0.05)
    evaluations = pd.read_csv(tmp_path / "out1" / "evaluations.csv")
    # Powell checks its budget between line searches, so it may overrun by one search (about 10 points)
    assert len(evaluations) <= 40 + 12, len(evaluations)


def test_a_metric_that_repeats_another_counts_once(tmp_path):
    """Efficiencies that are a constant divided by the latencies (energy = a constant power x latency, as
    in the paper's rows) add one number, not one per row, and the note says the fit proves little when
    the free parameters reach the independent count."""
    path = write_calibration(tmp_path, metrics=("latency_s",))
    spec = yaml.safe_load(path.read_text())
    for row in spec["rows"].values():
        row["measured"]["tokens_per_j"] = 1000.0 / row["measured"]["latency_s"]
    path.write_text(yaml.safe_dump(spec))
    r = calibrate(path, "--out", tmp_path / "out", "--no-loo", "--profile-points", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ident = json.loads((tmp_path / "out" / "fit.json").read_text())["identification"]
    assert ident["measurements"] == 8 and ident["independent_measurements"] == 5
    assert "tokens_per_j x latency_s is the same across the 4 rows" in ident["redundant"]["tokens_per_j"]
    assert "adds one number, not 4" in ident["redundant"]["tokens_per_j"]
    assert "8 measured numbers (5 independent), 3 free parameters" in r.stdout


def test_holding_every_parameter_leaves_nothing_to_fit(tmp_path):
    path = write_calibration(tmp_path)
    held = [f"--set={k}=2" for k in FREE]
    r = calibrate(path, "--out", tmp_path / "out", *held, cwd=tmp_path)
    assert r.returncode == 2 and "every one is held by fixed or --set; nothing to fit" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_a_whole_number_key_is_fitted_in_whole_numbers(tmp_path):
    """The schema refuses a fraction of a cycle: the optimiser's values for scheduler.overhead_cycles are
    rounded, in the fit, its profile and the preset."""
    free = {"hardware.clock_MHz": {"bounds": [50, 400]}, "scheduler.overhead_cycles": {"bounds": [0, 3000]}}
    path = write_calibration(tmp_path, parameters=free, method={"max_evaluations": 60})
    r = calibrate(path, "--out", tmp_path / "out", "--no-loo", "--profile-points", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    evaluations = pd.read_csv(tmp_path / "out" / "evaluations.csv")
    cycles = evaluations["scheduler.overhead_cycles"]
    assert (cycles == cycles.round()).all() and cycles.nunique() > 3
    profile = pd.read_csv(tmp_path / "out" / "profiles.csv")
    held = profile[profile["parameter"] == "scheduler.overhead_cycles"]["value"]
    assert held.tolist() == [0, 1000, 2000, 3000]
    assert isinstance(
        json.loads((tmp_path / "out" / "fit.json").read_text())["best"]["scheduler.overhead_cycles"], int
    )
