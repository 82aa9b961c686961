"""Verilator lint with targeted waivers only: each waiver names one message at its exact widths, so a new
width problem -- a truncation, or a known extension at another width -- fails the lint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from accelerator.rtl.convert import VERILATOR_WAIVED, convert, verilator_lint
from accelerator.rtl.drs import DrsBench, DrsParams
from accelerator.rtl.pe_lane import GemvBench, GemvParams
from accelerator.rtl.replay_cache import ReplayBench, ReplayParams
from accelerator.rtl.tas_unit import TasBench, TasParams
from accelerator.rtl.waivers import gemv_waivers, render_vlt, waivers_for

pytestmark = pytest.mark.hdl

# The accumulate of one lane as MyHDL writes it, and the row-index register as it was before its width
# was fixed (a 19-bit value truncated into the 16-bit y_row port).
SNIPPET = """module gemv_tile(input clk, input signed [23:0] pe_lane0_p0, input [{top}:0] orb,
                 output reg signed [39:0] pe_lane0_acc, output reg [15:0] y_row);
always @(posedge clk) begin
    pe_lane0_acc <= (pe_lane0_acc + pe_lane0_p0);
    y_row <= orb;
end
endmodule
"""


def _snippet(tmp_path: Path, truncation: bool) -> Path:
    f = tmp_path / "gemv_tile.v"
    f.write_text(SNIPPET.format(top=18 if truncation else 15))
    return f


def test_no_blanket_waivers() -> None:
    assert not any(flag.startswith("-Wno-") for flag in VERILATOR_WAIVED)


def test_a_new_truncation_fails_the_lint(tmp_path: Path, tools) -> None:
    """The hand-written snippet lints clean with the GEMV waivers; add an unwaived truncation and it fails,
    naming the warning."""
    tools("verilator")
    waivers = gemv_waivers(GemvParams())
    ok = verilator_lint(_snippet(tmp_path, truncation=False), "gemv_tile", waivers)
    assert ok.ok, ok.log
    bad = verilator_lint(_snippet(tmp_path, truncation=True), "gemv_tile", waivers)
    assert not bad.ok
    assert "%Warning-WIDTH" in bad.log and "'orb' generates 19 bits" in bad.log


def test_the_waived_extension_at_another_width_fails(tmp_path: Path, tools) -> None:
    """Waivers are exact: the tile converted with a 41-bit accumulator does not pass with the waivers of
    the 40-bit one (nor would a product grown past the accumulator)."""
    tools("verilator")
    p = GemvParams(lanes=2, max_cols=16)
    vfile = convert(GemvBench(replace(p, acc_bits=41), []), "Verilog", tmp_path)[0]
    res = verilator_lint(vfile, "gemv_tile", gemv_waivers(p))
    assert not res.ok and "expects 41 bits" in res.log
    assert verilator_lint(vfile, "gemv_tile", gemv_waivers(replace(p, acc_bits=41))).ok


@pytest.mark.parametrize(
    "bench",
    [
        GemvBench(GemvParams(lanes=3, max_cols=32), []),
        TasBench(TasParams(heads=3, head_dim=10, lanes=5, width=8), []),
        DrsBench(DrsParams(cores=3), [], 1),
        ReplayBench(ReplayParams(layers=3, tokens_per_frame=5, words=9, port_bits=32, addr_bits=24), []),
    ],
    ids=lambda b: b.name,
)
def test_every_module_needs_its_waivers_and_nothing_else(bench, tmp_path: Path, tools) -> None:
    """Without its waivers each module's lint fails, only on the waived rules; with them it passes."""
    tools("verilator")
    vfile = convert(bench, "Verilog", tmp_path)[0]
    waivers = waivers_for(bench)
    assert waivers and all(w.reason for w in waivers)
    assert verilator_lint(vfile, bench.name, waivers).ok
    bare = verilator_lint(vfile, bench.name, [])
    assert not bare.ok
    rules = {
        line.split(":")[0][len("%Warning-") :]
        for line in bare.log.splitlines()
        if line.startswith("%Warning")
    }
    assert rules <= {w.rule for w in waivers}


def test_vlt_names_each_waiver_with_its_reason() -> None:
    text = render_vlt(waivers_for(DrsBench(DrsParams(cores=5), [], 1)))
    assert text.startswith("`verilator_config\n")
    lines = text.splitlines()[1:]
    assert len(lines) == 4 and all(c.startswith("// ") for c in lines[::2])
    assert all(w.startswith("lint_off -rule ") and ' -match "' in w for w in lines[1::2])
