"""Calibration: fit free workload keys (clock, cores, memory efficiency, static power, ...) to measured
rows, and say what the rows identify.

```yaml
version: 1
name: u280_paper
base: ../fastcar_vilau7b_u280.yaml          # relative to this file
fixed: {simulation.mode: analytic}           # overrides every row gets
rows:                                        # each: overrides, and measured summary metrics
  dense:    {overrides: {policy.kind: dense}, measured: {latency_s: 689.7, tokens_per_j: 1.47}}
  replay50: {overrides: {policy.target_replay_ratio: 0.5}, measured: {latency_s: 475.3}}
parameters:                                  # the free parameters
  hardware.clock_MHz: {bounds: [100, 400]}   # continuous, fitted by a bounded optimiser
  hardware.power.static_W: {bounds: [1, 60]}
  hardware.cores: {choices: [1, 2, 4]}       # discrete, tried exhaustively
objective: {weights: {latency_s: 1.0, tokens_per_j: 1.0}}   # default 1 per metric
method: {tolerance: 0.005, starts: 4}       # "fits about equally well": RMS error within this of the best;
                                             # 4 more starts of the optimiser (Sobol)
```

The objective is the weighted mean of squared relative errors over every measured number; its square
root (the RMS relative error) is what the outputs report. Every combination of the discrete choices is
tried, and for each the continuous parameters are fitted by SciPy's bounded Powell method (on a log
scale where a bound spans more than a factor of 10) from the base workload's own values, from the middle
of the bounds and from ``method.starts`` seeded Sobol points; the best of all is the fit. Deterministic:
the same file gives the same fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.config import WorkloadError, load_yaml
from cosim.errors import InputError, shown

CALIBRATION_VERSION = 1
_SECTIONS = {"version", "name", "base", "fixed", "rows", "parameters", "objective", "method"}
#: RMS relative error within this of the best counts as fitting about equally well (method.tolerance).
DEFAULT_TOLERANCE = 0.005


class CalibrationError(InputError):
    """A calibration file that cannot be run as written."""


@dataclass(frozen=True)
class Row:
    overrides: dict
    measured: dict  #: metric -> measured value


@dataclass(frozen=True)
class Calibration:
    name: str
    base: dict
    fixed: dict
    rows: dict[str, Row]
    bounds: dict[str, tuple[float, float]]  #: continuous parameter -> (low, high)
    choices: dict[str, list]  #: discrete parameter -> values
    weights: dict[str, float]  #: metric -> weight
    tolerance: float = DEFAULT_TOLERANCE
    starts: int = 0  #: extra Sobol starts of the local optimiser (method.starts)

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(m for r in self.rows.values() for m in r.measured))

    @property
    def free(self) -> list[str]:
        return [*self.bounds, *self.choices]

    def measurements(self, rows: list[str] | None = None) -> int:
        return sum(len(self.rows[r].measured) for r in (rows or self.rows))


def _number(where: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise CalibrationError(f"{where}: a finite number, got {shown(v, 40)}")
    return float(v)


def load_calibration(path: str | Path) -> tuple[Calibration, str]:
    """The calibration and its file's text. Every row is checked as a workload, at the middle of the
    bounds and the first choices, and every measured metric against a run's summary, before any fit."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise CalibrationError(f"{path}: a calibration file is a YAML mapping")
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise CalibrationError(
            f"{path}: {unknown[0]}: not a calibration key (keys: {', '.join(sorted(_SECTIONS))})"
        )
    if raw.get("version", CALIBRATION_VERSION) != CALIBRATION_VERSION:
        raise CalibrationError(f"{path}: version: {raw.get('version')!r} is not {CALIBRATION_VERSION}")
    for key in ("name", "base", "rows", "parameters"):
        if key not in raw:
            raise CalibrationError(f"{path}: {key}: missing")
    base_path = (path.parent / str(raw["base"])).resolve()
    if not base_path.is_file():
        raise CalibrationError(
            f"{path}: base: {raw['base']} is not a file (relative to the calibration file)"
        )
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise CalibrationError(f"{path}: fixed: a mapping of workload keys to values")
    rows = _rows(path, raw["rows"])
    bounds, choices = _parameters(path, raw["parameters"])
    objective = raw.get("objective") or {}
    if not isinstance(objective, dict) or set(objective) - {"weights"}:
        raise CalibrationError(f"{path}: objective: a mapping with weights (metric -> weight)")
    weights = objective.get("weights") or {}
    if not isinstance(weights, dict):
        raise CalibrationError(f"{path}: objective.weights: a mapping of metrics to weights")
    metrics = list(dict.fromkeys(m for r in rows.values() for m in r.measured))
    for m, v in weights.items():
        if m not in metrics:
            raise CalibrationError(f"{path}: objective.weights.{m}: no row measures it")
        if _number(f"{path}: objective.weights.{m}", v) < 0:
            raise CalibrationError(f"{path}: objective.weights.{m}: a weight of 0 or more")
    method = raw.get("method") or {}
    if not isinstance(method, dict) or set(method) - {"tolerance", "starts"}:
        raise CalibrationError(f"{path}: method: a mapping with tolerance (RMS relative error) and starts")
    tolerance = _number(f"{path}: method.tolerance", method.get("tolerance", DEFAULT_TOLERANCE))
    starts = method.get("starts", 0)
    if isinstance(starts, bool) or not isinstance(starts, int) or not 0 <= starts <= 256:
        raise CalibrationError(
            f"{path}: method.starts: a whole number from 0 to 256, got {shown(starts, 40)}"
        )
    cal = Calibration(
        str(raw["name"]),
        load_yaml(base_path),
        fixed,
        rows,
        bounds,
        choices,
        {m: float(weights.get(m, 1.0)) for m in metrics},
        tolerance,
        starts,
    )
    _check(path, cal)
    return cal, path.read_text()


def _rows(path: Path, rows: Any) -> dict[str, Row]:
    if not isinstance(rows, dict) or not rows:
        raise CalibrationError(f"{path}: rows: a mapping of row names to {{overrides, measured}}")
    out = {}
    for name, row in rows.items():
        where = f"{path}: rows.{name}"
        if not isinstance(row, dict) or set(row) - {"overrides", "measured"} or "measured" not in row:
            raise CalibrationError(f"{where}: a mapping with measured (and overrides)")
        overrides, measured = row.get("overrides") or {}, row["measured"]
        if not isinstance(overrides, dict):
            raise CalibrationError(f"{where}.overrides: a mapping of workload keys to values")
        if not isinstance(measured, dict) or not measured:
            raise CalibrationError(f"{where}.measured: a mapping of summary metrics to measured values")
        values = {str(m): _number(f"{where}.measured.{m}", v) for m, v in measured.items()}
        for m, v in values.items():
            if v == 0:
                raise CalibrationError(f"{where}.measured.{m}: 0 (errors are relative to it)")
        out[str(name)] = Row(overrides, values)
    return out


def _parameters(path: Path, params: Any) -> tuple[dict, dict]:
    if not isinstance(params, dict) or not params:
        raise CalibrationError(f"{path}: parameters: a mapping of workload keys to {{bounds}} or {{choices}}")
    bounds, choices = {}, {}
    for key, spec in params.items():
        where = f"{path}: parameters.{key}"
        if isinstance(spec, dict) and set(spec) == {"bounds"} and isinstance(spec["bounds"], list):
            if len(spec["bounds"]) != 2:
                raise CalibrationError(f"{where}.bounds: [low, high]")
            lo, hi = (_number(f"{where}.bounds", v) for v in spec["bounds"])
            if not lo < hi:
                raise CalibrationError(f"{where}.bounds: low < high, got [{lo:g}, {hi:g}]")
            bounds[str(key)] = (lo, hi)
        elif isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], list):
            if not spec["choices"]:
                raise CalibrationError(f"{where}.choices: an empty list")
            choices[str(key)] = spec["choices"]
        else:
            raise CalibrationError(f"{where}: {{bounds: [low, high]}} or {{choices: [...]}}")
    return bounds, choices


def _check(path: Path, cal: Calibration) -> None:
    from cosim.api import load, run

    guess = {**_start(cal), **{k: v[0] for k, v in cal.choices.items()}}
    for name, row in cal.rows.items():
        for k, vs in [("", [None]), *cal.choices.items()]:
            for v in vs:
                params = {**guess, k: v} if k else guess
                try:
                    load(cal.base, {**cal.fixed, **row.overrides, **params}, check_memory=False)
                except WorkloadError as exc:
                    at = f" with {k} = {v!r}" if k else ""
                    raise CalibrationError(f"{path}: rows.{name}{at}: {exc}") from None
    first = next(iter(cal.rows.values()))
    w = load(
        cal.base, {**cal.fixed, **first.overrides, **guess, "simulation.mode": "analytic"}, check_memory=False
    )
    known = run(w).summary
    for name, row in cal.rows.items():
        for m in row.measured:
            if not isinstance(known.get(m), int | float) or isinstance(known.get(m), bool):
                raise CalibrationError(
                    f"{path}: rows.{name}.measured.{m}: not a numeric metric of a run (summary.json keys, "
                    "docs/metrics.md)"
                )


# ---------------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------------


def _log_scaled(lo: float, hi: float) -> bool:
    return lo > 0 and hi / lo > 10


def _to_unit(cal: Calibration, key: str, value: float) -> float:
    lo, hi = cal.bounds[key]
    if _log_scaled(lo, hi):
        return math.log(value / lo) / math.log(hi / lo)
    return (value - lo) / (hi - lo)


def _from_unit(cal: Calibration, key: str, u: float) -> float:
    lo, hi = cal.bounds[key]
    u = min(1.0, max(0.0, u))
    return lo * (hi / lo) ** u if _log_scaled(lo, hi) else lo + u * (hi - lo)


def _start(cal: Calibration) -> dict:
    return {k: _from_unit(cal, k, 0.5) for k in cal.bounds}


@dataclass
class Evaluation:
    params: dict
    predicted: dict  #: row -> metric -> simulated value
    rms: float  #: RMS relative error over the rows it was fitted on (weighted)


@dataclass
class Fit:
    best: Evaluation
    evaluations: list[Evaluation] = field(default_factory=list)


class Model:
    """The simulator as a function of the free parameters: predictions per row, memoised, and the error
    over a chosen set of rows."""

    def __init__(self, cal: Calibration, progress: Callable[[int], None] | None = None) -> None:
        self.cal, self.progress, self.runs = cal, progress, 0
        self._memo: dict[str, dict] = {}
        self._own = self._base_values()

    def _base_values(self) -> dict[str, float]:
        """Each continuous parameter's value in the base workload, as a point of its unit interval (the
        middle where the base has no number there)."""
        from cosim.api import load

        w = load(self.cal.base, self.cal.fixed, check_memory=False).model_dump(mode="json")
        own = {}
        for k, (lo, hi) in self.cal.bounds.items():
            node = w
            for part in k.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            ok = isinstance(node, int | float) and not isinstance(node, bool)
            own[k] = _to_unit(self.cal, k, min(hi, max(lo, float(node)))) if ok else 0.5
        return own

    def predict(self, params: dict, rows: list[str]) -> dict:
        from cosim.sweep_exec import evaluate

        out = {}
        for name in rows:
            row = self.cal.rows[name]
            key = repr((name, sorted(params.items(), key=lambda kv: kv[0])))
            if key not in self._memo:
                overrides = {**self.cal.fixed, **row.overrides, **params}
                self._memo[key] = evaluate(self.cal.base, overrides, list(row.measured))
                self.runs += 1
                if self.progress:
                    self.progress(self.runs)
            out[name] = self._memo[key]
        return out

    def rms(self, predicted: dict, rows: list[str]) -> float:
        num = den = 0.0
        for name in rows:
            for m, measured in self.cal.rows[name].measured.items():
                w = self.cal.weights[m]
                num += w * ((predicted[name][m] - measured) / measured) ** 2
                den += w
        return math.sqrt(num / den) if den else 0.0

    def _starts(self, free: list[str]) -> list[list[float]]:
        """Where the local optimiser starts: the base workload's own values (clipped into the bounds),
        the middle of the bounds, and ``method.starts`` more points of a scrambled Sobol sequence (seeded):
        one start can stall in a valley of a rugged error surface."""
        from scipy.stats import qmc

        starts = [[self._own[k] for k in free], [0.5] * len(free)]
        if self.cal.starts:
            starts += qmc.Sobol(len(free), scramble=True, seed=0).random(self.cal.starts).tolist()
        return starts

    def fit(self, rows: list[str] | None = None, hold: dict | None = None) -> Fit:
        """The best parameters on ``rows`` (all by default), with the parameters in ``hold`` fixed."""
        from scipy.optimize import minimize

        rows = rows or list(self.cal.rows)
        hold = hold or {}
        free = [k for k in self.cal.bounds if k not in hold]
        evaluations: list[Evaluation] = []

        def score(params: dict) -> float:
            predicted = self.predict(params, rows)
            e = Evaluation(params, predicted, self.rms(predicted, rows))
            evaluations.append(e)
            return e.rms

        discrete = {k: v for k, v in self.cal.choices.items() if k not in hold}
        for combo in itertools.product(*discrete.values()):
            chosen = {**dict(zip(discrete, combo, strict=True)), **hold}

            def objective(u, chosen=chosen) -> float:
                cont = {k: _from_unit(self.cal, k, x) for k, x in zip(free, u, strict=True)}
                return score({**cont, **chosen})

            if free:
                for start in self._starts(free):
                    minimize(
                        objective,
                        start,
                        method="Powell",
                        bounds=[(0.0, 1.0)] * len(free),
                        options={"xtol": 1e-4, "ftol": 1e-6, "maxfev": 200 * len(free)},
                    )
            else:
                score(dict(chosen))
        best = min(evaluations, key=lambda e: e.rms)
        return Fit(best, evaluations)


def leave_one_out(model: Model) -> list[dict]:
    """Per row: fitted on every other row, its predicted metrics against the measured ones."""
    out = []
    names = list(model.cal.rows)
    for held in names:
        others = [r for r in names if r != held]
        fit = model.fit(others)
        predicted = model.predict(fit.best.params, [held])[held]
        for m, measured in model.cal.rows[held].measured.items():
            out.append(
                {
                    "row": held,
                    "metric": m,
                    "measured": measured,
                    "predicted": predicted[m],
                    "rel_error": predicted[m] / measured - 1.0,
                    "fit_rms_on_others": fit.best.rms,
                    **{f"fitted {k}": v for k, v in fit.best.params.items()},
                }
            )
    return out


def profiles(model: Model, best: Evaluation, points: int = 9) -> list[dict]:
    """Per free parameter, the best RMS error with it held at each of ``points`` values across its
    bounds (or at each choice) and the others fitted again: flat means the rows do not identify it."""
    out = []
    for key in model.cal.bounds:
        for i in range(points):
            v = _from_unit(model.cal, key, i / (points - 1))
            out.append({"parameter": key, "value": v, "rms": model.fit(hold={key: v}).best.rms})
    for key, values in model.cal.choices.items():
        for v in values:
            out.append({"parameter": key, "value": v, "rms": model.fit(hold={key: v}).best.rms})
    return out


def residuals(cal: Calibration, best: Evaluation) -> list[dict]:
    return [
        {
            "row": name,
            "metric": m,
            "measured": measured,
            "simulated": best.predicted[name][m],
            "rel_error": best.predicted[name][m] / measured - 1.0,
        }
        for name, row in cal.rows.items()
        for m, measured in row.measured.items()
    ]


def identification(cal: Calibration, prof: list[dict], best: Evaluation) -> dict:
    """What the rows can say: measurements against free parameters, and which parameters' profiles stay
    within the tolerance of the best fit across their whole range (not identified)."""
    n, k = cal.measurements(), len(cal.free)
    flat = sorted(
        {p["parameter"] for p in prof} - {p["parameter"] for p in prof if p["rms"] > best.rms + cal.tolerance}
    )
    note = f"{n} measured numbers, {k} free parameters" + (
        ": as many parameters as numbers or more, so a close fit proves little" if k >= n else ""
    )
    return {"measurements": n, "free_parameters": k, "note": note, "not_identified": flat}


# ---------------------------------------------------------------------------------------------------
# The calibration directory
# ---------------------------------------------------------------------------------------------------


def fitted_preset(cal: Calibration, best: Evaluation) -> dict:
    """The base's hardware with the fitted values, as a board preset file holds it."""
    from cosim.api import load

    w = load(cal.base, {**cal.fixed, **best.params}, check_memory=False)
    hw = w.hardware.model_dump(mode="json", exclude={"preset"})
    hw["source"] = f"fitted by python -m cosim calibrate ({cal.name}); see its fit.json"
    return {"hardware": hw}


def write_calibration(
    out: Path, spec_text: str, cal: Calibration, fit: Fit, loo: list[dict], prof: list[dict]
) -> None:
    """Fill ``out`` (a staging directory of :func:`cosim.outdir.claim`)."""
    import json

    import pandas as pd
    import yaml

    (out / "calibration.yaml").write_text(spec_text)
    ident = identification(cal, prof, fit.best)
    near = [e for e in fit.evaluations if e.rms <= fit.best.rms + cal.tolerance]
    summary = {
        "name": cal.name,
        "best": fit.best.params,
        "rms_rel_error": fit.best.rms,
        "max_abs_rel_error": max(abs(r["rel_error"]) for r in residuals(cal, fit.best)),
        "loo_max_abs_rel_error": max((abs(r["rel_error"]) for r in loo), default=None),
        "identification": ident,
        "near_equivalent": {
            "tolerance": cal.tolerance,
            "count": len(near),
            "ranges": {
                k: [min(e.params[k] for e in near), max(e.params[k] for e in near)]
                if k in cal.bounds
                else sorted({repr(e.params[k]) for e in near})
                for k in cal.free
            },
        },
    }
    (out / "fit.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    pd.DataFrame(residuals(cal, fit.best)).to_csv(out / "residuals.csv", index=False)
    pd.DataFrame(loo).to_csv(out / "leave_one_out.csv", index=False)
    pd.DataFrame(prof).to_csv(out / "profiles.csv", index=False)
    evals = pd.DataFrame([{**e.params, "rms": e.rms} for e in fit.evaluations])
    evals.to_csv(out / "evaluations.csv", index=False)
    evals[evals["rms"] <= fit.best.rms + cal.tolerance].to_csv(out / "near_equivalent.csv", index=False)
    header = (
        f"# Board preset fitted by `python -m cosim calibrate` ({cal.name}): RMS relative error "
        f"{fit.best.rms:.4f} over {ident['measurements']} measured numbers.\n# Copy it to "
        "workloads/boards/<name>.yaml to use it as hardware.preset: <name>.\n"
    )
    (out / "preset.yaml").write_text(header + yaml.safe_dump(fitted_preset(cal, fit.best), sort_keys=False))
