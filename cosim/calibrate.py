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
  hardware.power.static_W: {bounds: [1, 60], start: 18}   # start: where the optimiser starts (else the base's value)
  hardware.cores: {choices: [1, 2, 4]}       # discrete, tried exhaustively
objective: {weights: {latency_s: 1.0, tokens_per_j: 1.0}}   # default 1 per metric
method: {tolerance: 0.005, starts: 4, max_evaluations: 400}
# tolerance: "fits about equally well" is an RMS error within this of the best; starts: more starts of the
# optimiser (Sobol); max_evaluations: parameter sets simulated per choice of the discrete parameters, the
# starts in order until it is spent (default: 200 per continuous parameter for each start)
```

The objective is the weighted mean of squared relative errors over every measured number; its square
root (the RMS relative error) is what the outputs report. Every combination of the discrete choices is
tried, and for each the continuous parameters are fitted by SciPy's bounded Powell method (on a log
scale where a bound spans more than a factor of 10) from the base workload's own values, from the middle
of the bounds and from ``method.starts`` seeded Sobol points; the best of all is the fit. Leave-one-out
and profile fits start from the best fit (and a profile from its previous point), which is where their
optimum lies unless the held-out row or value moves it far. Deterministic: the same file gives the same fit.

A measured metric that is a constant multiple of another (or of its reciprocal) across the rows, as a
paper's efficiency is when its energy is a constant power times its latency, adds one number (the
constant), not one per row; the identification counts it so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.config import WorkloadError, load_anchored_yaml, load_yaml
from cosim.errors import InputError, shown

CALIBRATION_VERSION = 1
_SECTIONS = {"version", "name", "base", "fixed", "rows", "parameters", "objective", "method"}
#: RMS relative error within this of the best counts as fitting about equally well (method.tolerance).
DEFAULT_TOLERANCE = 0.005
#: A metric whose measured values are another's (or its reciprocal's) times a constant to within this
#: relative spread, across three or more rows, counts as one measured number, not one per row.
REDUNDANT_SPREAD = 0.01


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
    start_at: dict[str, float] = field(default_factory=dict)  #: continuous parameter -> its start value
    whole: frozenset[str] = frozenset()  #: continuous parameters the schema types as whole numbers
    max_evaluations: int | None = None  #: per discrete combination, over all starts (method.max_evaluations)

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


def _whole(where: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CalibrationError(f"{where}: a whole number from {lo} to {hi}, got {shown(v, 40)}")
    return v


def load_calibration(path: str | Path, overrides: list[str] | None = None) -> tuple[Calibration, str]:
    """The calibration and its file's text. ``overrides`` (``KEY=VALUE``, as ``--set``) are added to
    ``fixed``; one that names a free parameter holds it at that value. Every row is checked as a workload,
    at the middle of the bounds and the first choices, and every measured metric against a run's summary,
    before any fit."""
    from cosim.config import parse_set

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
    try:
        fixed = {**fixed, **{".".join(k): v for k, v in parse_set(overrides)}}
    except WorkloadError as exc:
        raise CalibrationError(str(exc)) from None
    rows = _rows(path, raw["rows"])
    bounds, choices, start_at = _parameters(path, raw["parameters"])
    for key in fixed:
        for table in (bounds, choices, start_at):
            table.pop(key, None)
    if not bounds and not choices:
        raise CalibrationError(f"{path}: parameters: every one is held by fixed or --set; nothing to fit")
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
    if not isinstance(method, dict) or set(method) - {"tolerance", "starts", "max_evaluations"}:
        raise CalibrationError(
            f"{path}: method: a mapping with tolerance (RMS relative error), starts and max_evaluations"
        )
    tolerance = _number(f"{path}: method.tolerance", method.get("tolerance", DEFAULT_TOLERANCE))
    starts = _whole(f"{path}: method.starts", method.get("starts", 0), 0, 256)
    max_evaluations = method.get("max_evaluations")
    if max_evaluations is not None:
        max_evaluations = _whole(f"{path}: method.max_evaluations", max_evaluations, 1, 10**6)
    cal = Calibration(
        str(raw["name"]),
        load_anchored_yaml(base_path),
        fixed,
        rows,
        bounds,
        choices,
        {m: float(weights.get(m, 1.0)) for m in metrics},
        tolerance,
        starts,
        start_at=start_at,
        max_evaluations=max_evaluations,
        whole=frozenset(k for k in bounds if _whole_number_key(k)),
    )
    _check(path, cal)
    return cal, path.read_text()


def _whole_number_key(key: str) -> bool:
    """Whether the workload schema types ``key`` as an integer (``scheduler.overhead_cycles``): the
    optimiser's values for it are rounded, as the schema would refuse a fraction."""
    from types import UnionType
    from typing import Union, get_args, get_origin

    from pydantic import BaseModel

    from cosim.config import Workload

    node: Any = Workload
    parts = key.split(".")
    while parts:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(parts.pop(0))
            if field is None:
                return False
            node = field.annotation
        else:  # a mapping of names to sections (hardware.memory.<group>): skip the name
            parts.pop(0)
            node = next((a for a in get_args(node)[1:] if isinstance(a, type)), None)
        if get_origin(node) in (Union, UnionType):  # X | None
            node = next((a for a in get_args(node) if a is not type(None)), None)
    return node is int


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


def _parameters(path: Path, params: Any) -> tuple[dict, dict, dict]:
    if not isinstance(params, dict) or not params:
        raise CalibrationError(f"{path}: parameters: a mapping of workload keys to {{bounds}} or {{choices}}")
    bounds, choices, start_at = {}, {}, {}
    for key, spec in params.items():
        where = f"{path}: parameters.{key}"
        if (
            isinstance(spec, dict)
            and set(spec) in ({"bounds"}, {"bounds", "start"})
            and isinstance(spec["bounds"], list)
        ):
            if len(spec["bounds"]) != 2:
                raise CalibrationError(f"{where}.bounds: [low, high]")
            lo, hi = (_number(f"{where}.bounds", v) for v in spec["bounds"])
            if not lo < hi:
                raise CalibrationError(f"{where}.bounds: low < high, got [{lo:g}, {hi:g}]")
            bounds[str(key)] = (lo, hi)
            if "start" in spec:
                start = _number(f"{where}.start", spec["start"])
                if not lo <= start <= hi:
                    raise CalibrationError(f"{where}.start: {start:g} is outside the bounds [{lo:g}, {hi:g}]")
                start_at[str(key)] = start
        elif isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], list):
            if not spec["choices"]:
                raise CalibrationError(f"{where}.choices: an empty list")
            choices[str(key)] = spec["choices"]
        else:
            raise CalibrationError(
                f"{where}: {{bounds: [low, high], start (optional)}} or {{choices: [...]}}"
            )
    return bounds, choices, start_at


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
    v = lo * (hi / lo) ** u if _log_scaled(lo, hi) else lo + u * (hi - lo)
    return min(math.floor(hi), max(math.ceil(lo), round(v))) if key in cal.whole else v


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
    over a chosen set of rows. With ``jobs`` > 1 the rows of a parameter set run in that many processes."""

    def __init__(
        self, cal: Calibration, progress: Callable[[int], None] | None = None, jobs: int = 1
    ) -> None:
        self.cal, self.progress, self.runs = cal, progress, 0
        self._memo: dict[str, dict] = {}
        self._own = self._base_values()
        self._pool = None
        if jobs > 1:
            from cosim.sweep_exec import quiet_pool

            self._pool = quiet_pool(jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _base_values(self) -> dict[str, float]:
        """Each continuous parameter's start (``start`` in its spec, else its value in the base workload),
        as a point of its unit interval (the middle where the base has no number there)."""
        from cosim.api import load

        w = load(self.cal.base, self.cal.fixed, check_memory=False).model_dump(mode="json")
        own = {}
        for k, (lo, hi) in self.cal.bounds.items():
            node = self.cal.start_at.get(k)
            if node is None:
                node = w
                for part in k.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
            ok = isinstance(node, int | float) and not isinstance(node, bool)
            own[k] = _to_unit(self.cal, k, min(hi, max(lo, float(node)))) if ok else 0.5
        return own

    def predict(self, params: dict, rows: list[str]) -> dict:
        from cosim.sweep_exec import evaluate

        keys = {name: repr((name, sorted(params.items(), key=lambda kv: kv[0]))) for name in rows}
        todo = [name for name in rows if keys[name] not in self._memo]
        # a calibration records no timeline: in event mode it would cost a second run of a dense row
        args = [
            (
                self.cal.base,
                {**self.cal.fixed, **self.cal.rows[n].overrides, **params, "outputs.timeline_steps": 0},
                list(self.cal.rows[n].measured),
            )
            for n in todo
        ]
        results = self._pool.map(evaluate, *zip(*args, strict=True)) if self._pool and todo else None
        for i, name in enumerate(todo):
            self._memo[keys[name]] = next(results) if results else evaluate(*args[i])
            self.runs += 1
            if self.progress:
                self.progress(self.runs)
        return {name: self._memo[keys[name]] for name in rows}

    def rms(self, predicted: dict, rows: list[str]) -> float:
        num = den = 0.0
        for name in rows:
            for m, measured in self.cal.rows[name].measured.items():
                w = self.cal.weights[m]
                num += w * ((predicted[name][m] - measured) / measured) ** 2
                den += w
        return math.sqrt(num / den) if den else 0.0

    def _starts(self, free: list[str]) -> list[list[float]]:
        """Where the local optimiser starts: the parameters' own start values (clipped into the bounds),
        the middle of the bounds, and ``method.starts`` more points of a scrambled Sobol sequence (seeded):
        one start can stall in a valley of a rugged error surface."""
        from scipy.stats import qmc

        starts = [[self._own[k] for k in free], [0.5] * len(free)]
        if self.cal.starts:
            starts += qmc.Sobol(len(free), scramble=True, seed=0).random(self.cal.starts).tolist()
        return starts

    def fit(self, rows: list[str] | None = None, hold: dict | None = None, near: list[dict] = ()) -> Fit:
        """The best parameters on ``rows`` (all by default), with the parameters in ``hold`` fixed. Given
        ``near`` (parameter sets close to the answer), the optimiser starts from those alone."""
        from scipy.optimize import minimize

        rows = rows or list(self.cal.rows)
        hold = hold or {}
        free = [k for k in self.cal.bounds if k not in hold]
        starts = [[_to_unit(self.cal, k, p[k]) for k in free] for p in near] if near else self._starts(free)
        # the same start twice finds nothing new
        starts = [list(x) for x in dict.fromkeys(map(tuple, starts))]
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
                first = len(evaluations)
                for start in starts:
                    budget = 200 * len(free)
                    if self.cal.max_evaluations is not None:
                        budget = self.cal.max_evaluations - (len(evaluations) - first)
                        if budget <= 0:
                            break
                    minimize(
                        objective,
                        start,
                        method="Powell",
                        bounds=[(0.0, 1.0)] * len(free),
                        options={"xtol": 1e-4, "ftol": 1e-6, "maxfev": budget},
                    )
            else:
                score(dict(chosen))
        best = min(evaluations, key=lambda e: e.rms)
        return Fit(best, evaluations)


def leave_one_out(model: Model, best: Evaluation) -> list[dict]:
    """Per row: fitted on every other row (from the full fit), its predicted metrics against the measured
    ones."""
    out = []
    names = list(model.cal.rows)
    for held in names:
        others = [r for r in names if r != held]
        fit = model.fit(others, near=[best.params])
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
    bounds (or at each choice) and the others fitted again, from the best fit and from the previous
    point's: flat means the rows do not identify it."""
    out = []
    for key in model.cal.bounds:
        previous = best
        for i in range(points):
            v = _from_unit(model.cal, key, i / (points - 1))
            previous = model.fit(hold={key: v}, near=[best.params, previous.params]).best
            out.append({"parameter": key, "value": v, "rms": previous.rms})
    for key, values in model.cal.choices.items():
        for v in values:
            out.append(
                {"parameter": key, "value": v, "rms": model.fit(hold={key: v}, near=[best.params]).best.rms}
            )
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


def redundant_metrics(cal: Calibration) -> dict[str, tuple[int, str]]:
    """Metric -> (rows, why) where it adds one number rather than one per row: across the (three or
    more) rows that measure both, its values are another metric's, or their reciprocals, times a
    constant."""
    out: dict[str, tuple[int, str]] = {}
    for a, b in itertools.combinations(cal.metrics, 2):
        rows = [r.measured for r in cal.rows.values() if a in r.measured and b in r.measured]
        if b in out or a in out or len(rows) < 3:
            continue
        for power, how in ((1, "x"), (-1, "/")):
            ratios = [r[b] * r[a] ** power for r in rows]
            spread = max(ratios) / min(ratios) - 1 if min(ratios) > 0 else math.inf
            if spread <= REDUNDANT_SPREAD:
                out[b] = (
                    len(rows),
                    f"{b} {how} {a} is the same across the {len(rows)} rows measuring both (to {spread:.2%}): "
                    f"{b} adds one number, not {len(rows)}",
                )
                break
    return out


def identification(cal: Calibration, prof: list[dict], best: Evaluation) -> dict:
    """What the rows can say: independent measurements against free parameters, and which parameters'
    profiles stay within the tolerance of the best fit across their whole range (not identified)."""
    n, k = cal.measurements(), len(cal.free)
    redundant = redundant_metrics(cal)
    independent = n - sum(rows - 1 for rows, _ in redundant.values())
    flat = sorted(
        {p["parameter"] for p in prof} - {p["parameter"] for p in prof if p["rms"] > best.rms + cal.tolerance}
    )
    counted = f"{n} measured numbers" + (f" ({independent} independent)" if independent < n else "")
    note = f"{counted}, {k} free parameters" + (
        ": as many parameters as independent numbers or more, so a close fit proves little"
        if k >= independent
        else ""
    )
    return {
        "measurements": n,
        "independent_measurements": independent,
        "redundant": {m: why for m, (_, why) in redundant.items()},
        "free_parameters": k,
        "note": note,
        "not_identified": flat,
    }


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
