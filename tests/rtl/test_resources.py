"""The resource table and the accelerator-level estimate / fit check a sweep uses."""

from __future__ import annotations

import pytest

from accelerator.rtl.resources import LABEL, SWEEPS, estimate, fits, load_table
from accelerator.spec import HardwareSpec, Resources


def test_table_covers_every_sweep() -> None:
    table = load_table()
    assert "pre-place-and-route" in table["label"]
    for module, (param, values, _) in SWEEPS.items():
        got = sorted(r["value"] for r in table["rows"] if r["module"] == module and r["param"] == param)
        assert got == sorted(values), f"{module}: table out of date; run python -m accelerator.rtl.resources"


def test_estimate_labelled_and_scales_with_cores() -> None:
    one = estimate(HardwareSpec(cores=1, lanes_per_core=64))
    four = estimate(HardwareSpec(cores=4, lanes_per_core=64))
    assert one["label"] == LABEL
    assert four["dsps"] >= 4 * 64 > one["dsps"] >= 64
    assert four["luts"] > one["luts"] > 0 and four["brams"] > one["brams"]
    assert one["per_module"]["gemv_tile"]["basis"] == "synthesized"
    assert estimate(HardwareSpec(lanes_per_core=256))["per_module"]["gemv_tile"]["basis"] == "extrapolated"


def test_fits_rejects_a_too_small_board() -> None:
    small = HardwareSpec(
        cores=8, lanes_per_core=128, resources=Resources(luts=10_000, ffs=20_000, dsps=100, brams=10)
    )
    ok, reason = fits(small)
    assert not ok and "dsps" in reason and "pre-place-and-route" in reason
    big = HardwareSpec(
        cores=2,
        lanes_per_core=64,
        resources=Resources(luts=1_303_680, ffs=2_607_360, dsps=9024, brams=2016, urams=960),
    )
    ok, reason = fits(big)
    assert ok, reason
    assert "memory controllers" in reason  # what the estimate leaves out is said with every verdict


def test_operand_buffers_fill_uram_then_bram() -> None:
    # 8,192 KiB = 67,108,864 bits: 228 URAM288 (294,912 bits) or 1,821 BRAM36 (36,864 bits) per buffer.
    u280 = Resources(luts=1_303_680, ffs=2_607_360, dsps=9024, brams=2016, urams=960)
    hw = HardwareSpec(cores=2, weight_buffers=2, weight_buffer_KiB=8192, resources=u280)
    est = estimate(hw)
    buf = est["per_module"]["operand_buffers"]
    assert (buf["urams"], buf["brams"]) == (4 * 228, 0)
    assert est["urams"] == 912 and fits(hw)[0]
    # twice the buffer: two buffers still fit the URAM (2 x 456), the other two spill into 2 x 3,641 BRAM36
    wide = hw.model_copy(update={"weight_buffer_KiB": 16384})
    buf = estimate(wide)["per_module"]["operand_buffers"]
    assert (buf["urams"], buf["brams"]) == (912, 2 * 3641)
    ok, reason = fits(wide)
    assert not ok and "brams" in reason
    # a board without UltraRAM holds them in BRAM only
    no_uram = hw.model_copy(update={"resources": u280.model_copy(update={"urams": 0})})
    assert estimate(no_uram)["per_module"]["operand_buffers"]["brams"] == 4 * 1821


def test_the_sequencer_is_part_of_the_estimate() -> None:
    est = estimate(HardwareSpec(cores=2, lanes_per_core=64))
    seq = est["per_module"]["sequencer"]
    assert seq["basis"] == "synthesized" and seq["ffs"] > 4 * 16 * 64  # four 16-deep queues of 64-bit words


def test_the_output_writers_are_part_of_the_estimate() -> None:
    """One writer per core; its drain register holds a tile of accumulators, so its flip-flops grow with
    the lanes (37 bits per lane at the paper's int4 x int16 over 11,008 columns)."""
    est = estimate(HardwareSpec(cores=2, lanes_per_core=512))
    w = est["per_module"]["output_writer"]
    assert w["instances"] == 2 and w["basis"] == "synthesized"
    assert w["ffs"] >= 512 * 37
    assert "activation memory" in est["not_included"]


@pytest.mark.parametrize("board", ["alveo-u280", "vck190", "zcu102", "kv260"])
def test_every_shipped_board_fits_its_preset_design(board: str) -> None:
    import sys
    from pathlib import Path

    from cosim.config import resolve

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tiny_workload import TINY

    ok, reason = fits(resolve({**TINY, "hardware": {"preset": board}}).hardware)
    assert ok, reason


def test_fits_unknown_board_is_not_checked() -> None:
    ok, reason = fits(HardwareSpec())
    assert ok and "unknown" in reason


@pytest.mark.parametrize("lanes", [4, 32, 128])
def test_estimate_matches_table_at_synthesized_points(lanes: int) -> None:
    row = next(r for r in load_table()["rows"] if r["module"] == "gemv_tile" and r["value"] == lanes)
    est = estimate(HardwareSpec(cores=1, lanes_per_core=lanes))["per_module"]["gemv_tile"]
    assert {k: est[k] for k in ("luts", "ffs", "dsps", "brams")} == {
        k: pytest.approx(row[k]) for k in ("luts", "ffs", "dsps", "brams")
    }
