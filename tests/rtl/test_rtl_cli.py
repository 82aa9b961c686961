"""``cosim rtl check`` and ``cosim rtl export`` entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from accelerator.rtl.vhdl_sim import ReplayResult
from accelerator.spec import HardwareSpec
from cosim.rtl_cli import rtl_check, rtl_export


@pytest.mark.hdl
def test_rtl_check_passes_and_reports_every_module(capsys: pytest.CaptureFixture[str], tools) -> None:
    tools("iverilog", "iverilog-vpi", "vvp", "verilator")
    assert rtl_check(cases=1, cocheck_prompts=1, formal=False) == 0  # formal: tests/rtl/test_formal.py
    out = capsys.readouterr().out
    for module in ("gemv_tile", "tas_unit", "drs_scheduler", "replay_cache_ctrl", "tas co-check"):
        assert module in out
    assert "DIFFER" not in out and "FAILED" not in out


def test_rtl_export_writes_hdl_table_and_vcd(tmp_path: Path) -> None:
    out = tmp_path / "rtl"
    hw = HardwareSpec(lanes_per_core=8, tas_lanes=4, cores=4)  # small, so conversion is quick
    assert rtl_export(out, vcd=True, hw=hw) == 0
    for name in ("gemv_tile", "tas_unit", "drs_scheduler", "replay_cache_ctrl"):
        assert (out / "verilog" / f"{name}.v").stat().st_size > 0
        assert (out / "vhdl" / f"{name}.vhd").stat().st_size > 0
        assert (out / "vcd" / f"{name}.vcd").read_text().startswith("$date")
    header = (out / "resources.csv").read_text().splitlines()[0]
    assert header.startswith("module,param,value,luts,ffs,dsps,brams")
    assert not list(tmp_path.glob(".rtl-export-*"))


def test_check_module_reports_a_timing_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rtl check`` is not vacuous: a cost-model change the RTL does not follow makes the module fail."""
    import accelerator.cost as cost
    from cosim.rtl_cli import check_module

    monkeypatch.setattr("cosim.rtl_cli.missing", lambda *t: list(t))  # tools off: only the three views
    monkeypatch.setattr("cosim.rtl_cli.tool_checks", lambda bench: {})
    monkeypatch.setattr("cosim.rtl_cli.ghdl_replay", lambda bench: ReplayResult(False, 0, skipped="off"))
    ok, line = check_module("drs_scheduler", cases=1)
    assert ok and "cycles equal" in line
    monkeypatch.setattr(cost, "DRS_COMMIT_CYCLES", cost.DRS_COMMIT_CYCLES + 1)
    ok, line = check_module("drs_scheduler", cases=1)
    assert not ok and "cycles DIFFER" in line


def _reduced_workload(tmp_path: Path, *sets: str) -> Path:
    """The tiny test workload on a two-core machine whose memory is whole cycles: 16 GB/s x 0.8 at
    200 MHz is 64 bytes (one burst) per cycle, 100 ns is 20 cycles, first come first served."""
    import copy
    import sys

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tiny_workload import TINY

    raw = copy.deepcopy(TINY)
    raw["hardware"].update(
        cores=2,
        memory={"ddr4": {"bandwidth_GBps": 16, "efficiency": 0.8, "latency_ns": 100, "arbitration": "fifo"}},
    )
    raw["scheduler"]["overhead_cycles"] = 0
    path = tmp_path / "reduced.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.hdl
def test_rtl_layer_reduced_flow_is_exact_under_verilator(tmp_path: Path, tools) -> None:
    """The CI flow of the paper-size command: the converted top level under Verilator, exact to the cycle."""
    tools("verilator")
    wl = _reduced_workload(tmp_path)
    for step in ("0", "16", "63"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cosim",
                "rtl",
                "layer",
                str(wl),
                "--step",
                step,
                "--layer",
                "2",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "difference: +0 cycles" in proc.stdout and "tolerance 0%" in proc.stdout
        assert "record finishes: all equal" in proc.stdout
        # every tensor the RTL writes equals the numpy reference (eight lines, none differing), and from
        # frame 1 on (step 16) the TAS unit's score of every entry
        lines = 8 if step == "0" else 9
        assert proc.stdout.count(" equal\n") == lines and "DIFFER" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "9"], "--layer: 9 is not a layer"),
        (["--step", "-1"], "--step: -1 is not a decode step"),
        (
            ["--set", "scheduler.dispatch=least_loaded", "--set", "simulation.granularity=instruction"],
            "round robin only",
        ),
        (["--set", "hardware.input_buffers=1"], "exposed input-buffer write"),
        (["--set", "hardware.input_write_elems_per_cycle=3"], "divisor of lanes_per_core"),
        (["--set", "model.mlp_kind=gelu"], "SwiGLU"),
    ],
)
def test_rtl_layer_bad_input_is_one_message_and_exit_2(tmp_path: Path, args, message) -> None:
    wl = _reduced_workload(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "cosim", "rtl", "layer", str(wl), "--simulator", "myhdl", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_rtl_export_exports_the_hardware_of_a_workload(tmp_path: Path) -> None:
    """``--workload`` (and ``--set``) choose the hardware; ``--set`` alone is a usage error."""
    import json

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tiny_workload import TINY

    wl = tmp_path / "w.yaml"
    wl.write_text(yaml.safe_dump(dict(TINY, hardware={"preset": "kv260", "lanes_per_core": 8, "cores": 3})))
    out = tmp_path / "rtl"
    cmd = [sys.executable, "-m", "cosim", "rtl", "export", "--out", str(out), "--workload", str(wl)]
    r = subprocess.run([*cmd, "--set", "hardware.tas_lanes=4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    modules = json.loads((out / "manifest.json").read_text())["modules"]
    assert modules["drs_scheduler"]["cores"] == 3 and modules["tas_unit"]["lanes"] == 4
    assert any(p.get("lanes") == 8 for p in modules.values())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cosim",
            "rtl",
            "export",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "hardware.cores=2",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--set needs --workload" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
