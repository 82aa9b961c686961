"""The GEMV tile at the sizes it is deployed at, not toy sizes: the deepest column sum of the exported
16,384-entry input buffer, at the preset's precisions.

The worst case is every weight and input at its most negative value: each product is 2^(w+x-2) and the
sum over ``cols`` columns is cols x 2^(w+x-2), the largest magnitude the accumulator must hold. Lanes are
cut to two (the accumulator is per lane, so its width does not depend on the lane count)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from accelerator.rtl.harness import check, simulate
from accelerator.rtl.pe_lane import GemvBench, GemvJob, GemvParams, accumulator_bits
from cosim.config import load_preset
from cosim.rtl_cli import export_benches

DEPTH = 16384  # the exported input buffer (cosim.rtl_cli.export_benches)


def worst_case(params: GemvParams, cols: int) -> GemvJob:
    w = np.full((params.lanes, cols), -(1 << (params.w_bits - 1)))
    x = np.full(cols, -(1 << (params.x_bits - 1)))
    return GemvJob(w, x)


def exported_gemv(preset: str) -> GemvParams:
    from accelerator.spec import HardwareSpec

    hw = HardwareSpec(**load_preset("board", preset)["hardware"])
    bench = next(b for b in export_benches(hw) if b.name == "gemv_tile")
    return bench.params


def test_accumulator_bits_by_hand():
    # int8 x int16 over 16,384 columns: 2^14 x 2^22 = 2^36 needs 37 bits of magnitude and a sign bit.
    assert accumulator_bits(8, 16, 16384) == 38
    # int4 weights (the U280 preset): 2^14 x 2^18 = 2^32 -> 34 bits; one column: 2^22 -> 24 bits.
    assert accumulator_bits(4, 16, 16384) == 34
    assert accumulator_bits(8, 16, 1) == 24


def test_a_too_narrow_accumulator_is_refused():
    with pytest.raises(ValueError, match="acc_bits 30 cannot hold 4096 products .* needs 36"):
        GemvParams(acc_bits=30, max_cols=4096)


@pytest.mark.parametrize("preset", ["alveo-u280", "kv260"])
def test_exported_tile_holds_the_deepest_column_sum(preset):
    """The parameters `rtl export` writes for the preset, at full buffer depth, on the MyHDL model (whose
    signals raise on overflow) and against the exact sum."""
    p = exported_gemv(preset)
    assert p.max_cols == DEPTH
    small = replace(p, lanes=2)
    r = check(GemvBench(small, [worst_case(small, DEPTH)]))
    assert r.outputs_equal, r.mismatch
    assert r.rtl_cycles == r.cost_cycles == [DEPTH + small.pipeline_cycles]


def test_one_bit_less_overflows_at_full_depth():
    """The bound is tight: the guard bypassed, an accumulator one bit narrower overflows on the worst case."""
    p = GemvParams(lanes=2, max_cols=DEPTH, acc_bits=accumulator_bits(8, 16, DEPTH))
    narrow = GemvParams(lanes=2, max_cols=DEPTH)
    object.__setattr__(narrow, "acc_bits", p.acc_bits - 1)  # what a careless edit of the default would do
    assert check(GemvBench(p, [worst_case(p, DEPTH)])).outputs_equal
    with pytest.raises(ValueError, match="intbv value"):
        simulate(GemvBench(narrow, [worst_case(narrow, DEPTH)]))


@pytest.mark.hdl
def test_converted_verilog_holds_the_deepest_column_sum(tools):
    """The converted Verilog wraps silently where MyHDL raises: under Icarus its output must still equal
    the exact sum at full depth."""
    tools("iverilog", "iverilog-vpi", "vvp")
    p = replace(exported_gemv("alveo-u280"), lanes=2, w_bits=8)  # int8 weights: the wider case
    bench = GemvBench(p, [worst_case(p, DEPTH)])
    r = simulate(bench, "icarus")
    assert r.outputs == bench.reference()
    assert r.latencies == [DEPTH + p.pipeline_cycles]


def test_export_widens_the_accumulator_for_wide_precisions():
    """16-bit weights and inputs over 16,384 columns need (2^14 x 2^30).bit_length() + 1 = 46 bits: the
    export sizes the accumulator instead of failing or wrapping; int8 keeps the default 40."""
    from accelerator.spec import HardwareSpec, Precision

    wide = next(
        b for b in export_benches(HardwareSpec(precision=Precision(weights_bits=16))) if b.name == "gemv_tile"
    )
    assert wide.params.acc_bits == 46
    assert next(b for b in export_benches(HardwareSpec()) if b.name == "gemv_tile").params.acc_bits == 40
