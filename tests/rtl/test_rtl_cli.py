"""``cosim rtl check`` and ``cosim rtl export`` entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelerator.rtl.vhdl_sim import ReplayResult
from accelerator.spec import HardwareSpec
from cosim.rtl_cli import rtl_check, rtl_export


@pytest.mark.hdl
def test_rtl_check_passes_and_reports_every_module(capsys: pytest.CaptureFixture[str], tools) -> None:
    tools("iverilog", "iverilog-vpi", "vvp", "verilator")
    assert rtl_check(cases=1, cocheck_prompts=1) == 0
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
