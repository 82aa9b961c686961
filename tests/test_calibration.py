"""The shipped U280 preset against the paper's four rows (workloads/calibrations/u280_paper.yaml), as
docs/validation.md documents its fit.

The residuals are read from the doc's own table, so the preset, the cost model and the doc cannot drift
apart unnoticed: a change of the model that moves a row by more than the doc's rounding fails here, and so
does a preset that is no longer the fit (a refit from it finds a better one)."""

import re

import pytest

from cosim.calibrate import Evaluation, Model, load_calibration, residuals
from cosim.config import WORKLOADS_DIR, load_preset

CALIBRATION = WORKLOADS_DIR / "calibrations" / "u280_paper.yaml"
DOC = WORKLOADS_DIR.parent / "docs" / "validation.md"
SECTION = "## The shipped preset against the four rows"


def documented_residuals() -> dict[tuple[str, str], float]:
    """(row, metric) -> relative error, from the table under SECTION: `| row | metric | paper | simulated |
    error |`, the error in percent with two decimals."""
    text = DOC.read_text()
    assert SECTION in text, f"docs/validation.md has no section {SECTION!r}"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in body.splitlines():
        m = re.match(r"\|\s*(\w+)\s*\|\s*`(\w+)`\s*\|[^|]*\|[^|]*\|\s*([+-]\d+\.\d\d)%", line)
        if m:
            out[(m[1], m[2])] = float(m[3]) / 100
    return out


def preset_params(cal) -> dict:
    hw = {"hardware": load_preset("board", "alveo-u280")["hardware"]}
    params = {}
    for key in cal.free:
        node = hw
        for part in key.split("."):
            node = node[part]
        params[key] = node
    return params


@pytest.fixture(scope="module")
def calibration():
    cal, _ = load_calibration(CALIBRATION)
    return cal


@pytest.mark.parametrize("mode", ["analytic", "event"])
def test_the_preset_gives_the_documented_residuals(calibration, mode):
    cal = calibration
    documented = documented_residuals()
    assert len(documented) == cal.measurements() == 8
    model = Model(cal)
    params = {**preset_params(cal), "simulation.mode": mode}
    predicted = model.predict(params, list(cal.rows))
    for r in residuals(cal, Evaluation(params, predicted, model.rms(predicted, list(cal.rows)))):
        # the doc rounds each error to 0.01 percentage points
        assert r["rel_error"] == pytest.approx(documented[(r["row"], r["metric"])], abs=5.1e-5), r


def test_the_preset_is_the_fit(calibration):
    """A refit of the continuous parameters from the preset's values, its discrete ones held, finds no
    better fit: the preset is the optimum of the calibration under today's cost model."""
    cal = calibration
    params = preset_params(cal)
    model = Model(cal)
    rows = list(cal.rows)
    at_preset = model.rms(model.predict(params, rows), rows)
    refit = model.fit(hold={k: params[k] for k in cal.choices}, near=[params]).best
    assert refit.rms > at_preset - 1e-4, (refit.params, refit.rms, at_preset)
