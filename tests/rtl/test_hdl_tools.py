"""Conversion and tool checks: Verilog/VHDL for every module, iverilog + verilator lint + ghdl, Icarus
co-simulation of the converted Verilog against the MyHDL model (bit-exact), Yosys on a small set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelerator.rtl.convert import convert, ghdl_analyse, iverilog_compile, verilator_lint
from accelerator.rtl.drs import DrsBench, DrsParams, drs_case
from accelerator.rtl.harness import simulate
from accelerator.rtl.pe_lane import GemvBench, GemvParams, gemv_case
from accelerator.rtl.replay_cache import ReplayBench, ReplayParams, replay_case
from accelerator.rtl.tas_unit import TasBench, TasParams, tas_case
from accelerator.rtl.waivers import waivers_for

pytestmark = pytest.mark.hdl

SMALL = {
    "gemv_tile": GemvBench(GemvParams(lanes=3, max_cols=32), []),
    "gemv_tile_w4_extra": GemvBench(GemvParams(lanes=2, w_bits=4, x_bits=8, max_cols=16, extra=2), []),
    "tas_unit": TasBench(TasParams(heads=3, head_dim=10, lanes=4, width=8), []),  # reciprocal mean
    "tas_unit_pow2": TasBench(TasParams(heads=4, head_dim=8, lanes=8), []),
    "drs_scheduler": DrsBench(DrsParams(cores=3), [], 1),
    "replay_cache_ctrl": ReplayBench(ReplayParams(layers=3, tokens_per_frame=5, words=9, port_bits=32), []),
}
CASES = {
    "gemv_tile": gemv_case,
    "tas_unit": tas_case,
    "drs_scheduler": drs_case,
    "replay_cache_ctrl": replay_case,
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_verilog_compiles_and_lints(name: str, tmp_path: Path, tools) -> None:
    tools("iverilog", "verilator")
    bench = SMALL[name]
    vfile = convert(bench, "Verilog", tmp_path)[0]
    ic = iverilog_compile(vfile)
    assert ic.ok, ic.log
    vl = verilator_lint(vfile, bench.name, waivers_for(bench))
    assert vl.ok, vl.log


@pytest.mark.parametrize("name", sorted(SMALL))
def test_vhdl_analyses(name: str, tmp_path: Path, tools) -> None:
    tools("ghdl")
    res = ghdl_analyse(convert(SMALL[name], "VHDL", tmp_path))
    assert res.ok, res.log


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_icarus_cosim_bit_exact(name: str, seed: int, tools) -> None:
    """The converted Verilog under Icarus (through the MyHDL VPI built at test time) matches the MyHDL
    model cycle for cycle and bit for bit, and both match the reference."""
    tools("iverilog", "iverilog-vpi", "vvp")
    bench = CASES[name](np.random.default_rng(100 + seed))
    a = simulate(bench, "myhdl")
    b = simulate(bench, "icarus")
    assert a.latencies == b.latencies
    assert a.outputs == b.outputs == bench.reference()


def test_lint_catches_a_broken_file(tmp_path: Path, tools) -> None:
    """The lint wrapper is not vacuous."""
    tools("verilator")
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output b); assign b = c; endmodule\n")
    assert not verilator_lint(bad, "bad").ok


def test_yosys_small_modules(tools) -> None:
    """synth_xilinx -family xcup maps the TAS lane multipliers to DSP48E2s and the DRS to LUTs/FFs only."""
    tools("yosys")
    from accelerator.rtl.yosys import synthesize

    tas = synthesize(TasBench(TasParams(heads=2, head_dim=4, lanes=2, width=16), []))
    assert tas["dsps"] == 2 and tas["ffs"] > 0 and tas["brams"] == 0
    drs = synthesize(DrsBench(DrsParams(cores=2), [], 1))
    assert drs["dsps"] == 0 and drs["luts"] > 0 and drs["ffs"] > 32


@pytest.mark.parametrize("name", sorted(CASES))
def test_vhdl_replays_bit_exact(name: str, tools) -> None:
    """The converted VHDL under GHDL, fed the MyHDL run's port trace, produces the same outputs on every
    cycle."""
    tools("ghdl")
    from accelerator.rtl.vhdl_sim import ghdl_replay

    res = ghdl_replay(CASES[name](np.random.default_rng(7)))
    assert res.ok, res.detail
    assert res.cycles > 10


def test_vhdl_replay_detects_a_difference(tools, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flip one recorded MyHDL output: the replay comparison must notice."""
    tools("ghdl")
    import accelerator.rtl.vhdl_sim as vs

    real = vs.simulate

    def tampered(bench, backend="myhdl", record=None, **kw):
        res = real(bench, backend, record=record, **kw)
        i = record["outputs"].index("done")
        record["out"][-3][i] ^= 1
        return res

    monkeypatch.setattr(vs, "simulate", tampered)
    res = vs.ghdl_replay(tas_case(np.random.default_rng(7)))
    assert not res.ok and "done" in res.detail
