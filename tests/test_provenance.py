"""Every run and capture directory says what produced it; ``--version`` says which tool this is."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from tiny_workload import TINY

from cosim.provenance import SOURCE_ROOT, command_line, git_state

ROOT = Path(__file__).resolve().parent.parent


def _git_head() -> str | None:
    if shutil.which("git") is None or not (SOURCE_ROOT / ".git").exists():
        return None
    r = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def test_version_names_the_tool_and_its_commit():
    r = subprocess.run([sys.executable, "-m", "cosim", "--version"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"fastcar-cosim {version('fastcar-cosim')}")
    head = _git_head()
    if head is not None:
        assert f"git {head[:12]}" in r.stdout
    assert git_state()[0] == head


def test_command_line_reads_as_typed():
    assert (
        command_line([str(ROOT / "cosim" / "__main__.py"), "run", "w y.yaml"])
        == "python -m cosim run 'w y.yaml'"
    )
    assert command_line(["script.py", "--x", "1"]) == "script.py --x 1"


def test_a_run_directory_records_what_produced_it(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(dict(TINY, outputs={"report": True, "timeline_steps": 1})))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "cosim",
        "run",
        str(path),
        "--out",
        str(out),
        "--set",
        "policy.target_replay_ratio=0.4",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == f"python -m cosim run {path} --out {out} --set policy.target_replay_ratio=0.4"
    assert prov["cwd"] == str(tmp_path)
    assert prov["version"] == version("fastcar-cosim")
    assert prov["git_commit"] == _git_head()
    import numpy
    import pydantic

    assert (
        prov["libraries"]["numpy"] == numpy.__version__ and prov["libraries"]["pydantic"] == pydantic.VERSION
    )
    assert prov["python"] == ".".join(map(str, sys.version_info[:3]))
    assert prov["machine"]["cpus"] >= 1
    assert "provenance" not in json.loads((out / "summary.json").read_text())  # results stay reproducible
    page = (out / "report.html").read_text()
    assert "id=provenance" in page and "python -m cosim run" in page
    if prov["git_commit"]:
        assert prov["git_commit"][:12] in page
    # running again replaces the run, provenance included (it is one of the run's own files)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.usefixtures("single_torch_thread")
def test_a_capture_directory_records_what_produced_it(tmp_path):
    from tiny_workload import TINY_CAPTURE

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dict(TINY_CAPTURE, trace={"source": "capture", "quality_seeds": 1})))
    out = tmp_path / "cap"
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "capture", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"].startswith("python -m cosim capture") and prov["libraries"]["torch"]
