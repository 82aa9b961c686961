"""Shared helpers of the RTL tests: skip with a clear reason when an HDL tool is absent."""

from __future__ import annotations

import pytest

from accelerator.rtl.tools import missing


def require(*tools: str) -> None:
    """Skip the calling test unless every tool is on PATH."""
    absent = missing(*tools)
    if absent:
        pytest.skip(f"needs {', '.join(absent)} (install iverilog, verilator, yosys, ghdl to run HDL checks)")


@pytest.fixture
def tools():
    """``tools("iverilog", ...)`` skips the test unless those tools are installed."""
    return require
