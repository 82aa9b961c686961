"""The shipped U280 preset reproduces the paper's two published rows (FASTCAR.md) within 5%."""

import pytest

from cosim.calibration import check, fit


@pytest.mark.parametrize("mode", ["analytic", "event"])
def test_paper_rows_within_five_percent(mode):
    rows = check(mode)
    for key in ("dense_latency_s", "latency_s", "dense_tokens_per_j", "tokens_per_j"):
        assert abs(rows[key]["error"]) < 0.05, (key, rows[key])


def test_preset_holds_the_fitted_values():
    from cosim.config import load_preset

    hw = load_preset("board", "alveo-u280")["hardware"]
    fitted = fit("analytic")
    assert hw["clock_MHz"] == pytest.approx(fitted["clock_MHz"], rel=1e-3)
    assert hw["power"]["static_W"] == pytest.approx(fitted["static_W"], rel=1e-3)
