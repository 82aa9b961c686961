"""The shipped U280 preset against two of the paper's published rows, dense and 50% replay (docs/fastcar.md).

The dense row is fitted (clock, static power), so it must hold to rounding. The 50%-replay row is a
prediction: docs/validation.md reports +4.2% latency and -4.7% efficiency since the softmax unit feeds a
head's values straight into the tile (issue 9). The band below is that result plus a margin, so a change of the model
that moves the prediction shows up here and in the doc together."""

import pytest

from cosim.calibration import check, fit


@pytest.mark.parametrize("mode", ["analytic", "event"])
def test_paper_rows(mode):
    rows = check(mode)
    for key in ("dense_latency_s", "dense_tokens_per_j"):
        assert abs(rows[key]["error"]) < 1e-3, (key, rows[key])
    assert 0.03 < rows["latency_s"]["error"] < 0.05, rows["latency_s"]
    assert -0.055 < rows["tokens_per_j"]["error"] < -0.035, rows["tokens_per_j"]


def test_preset_holds_the_fitted_values():
    from cosim.config import load_preset

    hw = load_preset("board", "alveo-u280")["hardware"]
    fitted = fit("analytic")
    assert hw["clock_MHz"] == pytest.approx(fitted["clock_MHz"], rel=1e-3)
    assert hw["power"]["static_W"] == pytest.approx(fitted["static_W"], rel=1e-3)
