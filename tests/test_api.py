"""The public Python API (docs/api.md): the same numbers as the command line, nothing written unless asked."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_workload import TINY

import cosim


def test_api_result_equals_the_command_line_and_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(path), "--out", str(out), "--set", "hardware.cores=4"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    cli = json.loads((out / "summary.json").read_text())

    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cosim.run(cosim.load(path, {"hardware.cores": 4}))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert result.workload.hardware.cores == 4
    for key in ("latency_s", "dense_latency_s", "energy_j", "replay_ratio", "tokens_per_j"):
        assert result.summary[key] == pytest.approx(cli[key], rel=1e-12), key
    assert len(result.layers) == result.workload.model.layers
    cores = result.cores
    assert len(cores) == result.workload.video.steps and cores["end_s"].iloc[-1] == pytest.approx(
        cli["latency_s"]
    )
    assert [cores[f"core{c}_busy_s"].sum() for c in range(4)] == pytest.approx(cli["core_busy_s"], rel=1e-12)
    assert result.trace.replay_cube().shape[0] == result.workload.video.batch


def test_mapping_and_overrides_take_python_values():
    w = cosim.load(TINY, {"hardware.cores": 2, "policy.target_replay_ratio": 0.25, "scheduler.drs": False})
    assert (w.hardware.cores, w.policy.target_replay_ratio, w.scheduler.drs) == (2, 0.25, False)
    assert TINY["hardware"] == {"preset": "kv260"}  # the caller's mapping is not modified
    dense = cosim.run(cosim.load(TINY, {"policy.kind": "dense"}))
    assert dense.summary["replay_ratio"] == 0 and dense.summary["speedup_vs_dense"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hardware.cores": 0}, "hardware.cores"),
        ({"hardware..cores": 2}, "malformed key"),
        ({"video.frame": 3}, "video.frame"),
    ],
)
def test_bad_overrides_raise_one_input_error_naming_the_key(overrides, message):
    with pytest.raises(cosim.InputError, match=message.replace(".", r"\.")):
        cosim.load(TINY, overrides)


def test_write_makes_the_run_directory_and_refuses_foreign_data(tmp_path):
    result = cosim.run(cosim.load(TINY, {"outputs.report": False}))
    out = result.write(tmp_path / "run")
    assert json.loads((out / "summary.json").read_text())["latency_s"] == pytest.approx(
        result.summary["latency_s"], rel=1e-12
    )
    assert (out / "layers.csv").exists() and (out / "trace.parquet").exists()
    result.write(out)  # an earlier run is replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user data")
    with pytest.raises(cosim.InputError):
        result.write(mine)
    assert (mine / "notes.txt").read_text() == "user data"


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(cosim.InputError, match="nope.yaml"):
        cosim.load(Path(tmp_path) / "nope.yaml")
