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
        cores=2, lanes_per_core=64, resources=Resources(luts=1_303_680, ffs=2_607_360, dsps=9024, brams=2016)
    )
    ok, reason = fits(big)
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
