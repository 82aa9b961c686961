"""`trace.source: capture` drives the simulator from the shipped trained model, live."""

import json
import subprocess
import sys

import pytest
import yaml
from tiny_workload import TINY_CAPTURE

from cosim.outdir import MARKER
from cosim.traces import read_trace
from models.checkpoint import DEFAULT_CHECKPOINT

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped checkpoint missing")

CAPTURE = TINY_CAPTURE


def cosim(tmp_path, command, raw, *extra):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(raw))
    return subprocess.run(
        [sys.executable, "-m", "cosim", command, str(path), *extra], capture_output=True, text=True
    )


def test_run_from_a_live_capture(tmp_path):
    r = cosim(tmp_path, "run", CAPTURE, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trace_is_real"] and summary["trace_label"] == "captured from fastcar_tiny.safetensors"
    assert 0.3 < summary["replay_ratio"] <= 0.5 and summary["speedup_vs_dense"] > 1.0
    assert {"psnr_db", "ssim", "token_agreement"} <= set(summary["quality"])
    trace = read_trace(tmp_path / "run" / "trace.parquet")
    assert trace.meta.source == "captured" and trace.meta.layers == 6 and trace.meta.batch == 2


def test_capture_command_writes_trace_and_quality(tmp_path):
    r = cosim(tmp_path, "capture", CAPTURE, "--out", str(tmp_path / "cap"))
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "cap").iterdir()} == {
        "trace.parquet",
        "quality.json",
        "provenance.json",
        MARKER,
    }
    assert json.loads((tmp_path / "cap" / "quality.json").read_text())["policy"] == "tas"


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"model": {"preset": "tiny"}}, "does not match the checkpoint"),
        ({"video": {"frames": 12, "prompts": 1}}, "exceeds the 8 frames"),
        ({"trace": {"source": "capture", "checkpoint": "/nonexistent.safetensors"}}, "trace.checkpoint"),
    ],
)
def test_capture_bad_input(tmp_path, change, fragment):
    raw = {**CAPTURE, **change}
    r = cosim(tmp_path, "run", raw, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_paper_workload_on_a_transferred_capture(tmp_path):
    """The shipped capture of the tiny model, mapped onto VILA-U 7B dims, drives the paper's setting; it
    was not calibrated on, yet lands within 2.5% of the paper's 50%-replay row (475.3 s)."""
    from cosim.config import WORKLOADS_DIR

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cosim",
            "run",
            str(WORKLOADS_DIR / "fastcar_vilau7b_u280_transferred.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "simulation.mode=analytic",
            "--set",
            "outputs.report=false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trace_source"] == "transferred" and not summary["trace_is_real"]
    assert summary["trace_label"] == "transferred from fastcar_tiny.safetensors (not a direct capture)"
    # exactly 0.5 here; ties at tau (the source's layer 0 has runs of one TAS value) could add a few
    assert summary["replay_ratio"] == pytest.approx(0.5, abs=1e-3)
    # docs/validation.md ("The same fit elsewhere"): 483.6 s on the shipped preset, +1.75% against the
    # paper's 475.3 s (the synthetic trace gives 481.2 s, +1.24%). Re-measured after the transfer became a
    # resampling (2026-11-27): 483.60 s, the index mapping gave 483.64 s.
    assert 0.01 < summary["latency_s"] / 475.3 - 1 < 0.025


def test_readme_quickstart_workload_runs(tmp_path):
    from cosim.config import WORKLOADS_DIR

    out = tmp_path / "quickstart"
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(WORKLOADS_DIR / "quickstart.yaml"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").is_file() and "trace captured" in r.stdout
    quality = json.loads((out / "summary.json").read_text())["quality"]  # the README's 50% target, met
    assert quality["tau_source"] == "closed_loop" and abs(quality["replay_ratio"] - 0.5) <= 0.005, quality
