"""The report of a calibration (``python -m cosim calibrate``), built from its directory alone, so it can
be rebuilt after the fit is gone: how well the fitted simulator matches the measured rows, how well it
predicts a row it was not fitted on, and what the rows do not pin down.

The same rules as the run and sweep reports, whose helpers it uses: one self-contained page (plotly.js
embedded once, the machine may be offline), every value from the directory escaped where it lands, the
page replaced atomically, and the numbers behind each figure written beside it (``report_data/*.csv``,
linked from the captions).

CSV files are read as text, as the sweep report reads them, so that the figures' CSV files say what the
directory's files say (a choice value ``None`` stays ``None``, ``2`` does not become ``2.0``). An empty
file (``--no-loo``, ``--profile-points 0``) has no rows; only fit.json and residuals.csv are required.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.subplots import make_subplots

from cosim.errors import is_finite_number, is_number, reason, shown
from cosim.fmt import num
from reports.inputs import ReportError
from reports.run_report import DATA_DIR, _esc, _plotlyjs, figure_html, page_head, write_page_and_data
from reports.sweep_report import _cell

__all__ = ["ReportError", "write_calibration_report"]

#: Rows of near_equivalent.csv drawn at most (parallel coordinates of more are slow and unreadable).
MAX_NEAR = 2000
MAX_TABLE_ROWS = 200  #: rows of the residual and leave-one-out tables
#: fit.json keys the page shows in their own places; any other key is listed as is.
FIT_KEYS = {
    "name",
    "best",
    "rms_rel_error",
    "max_abs_rel_error",
    "loo_max_abs_rel_error",
    "identification",
    "near_equivalent",
}
IDENT_KEYS = {
    "measurements",
    "independent_measurements",
    "free_parameters",
    "note",
    "not_identified",
    "redundant",
}
COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#eeca3b"]


# ---------------------------------------------------------------------------------------------------
# Reading the directory
# ---------------------------------------------------------------------------------------------------


@dataclass
class Param:
    """A free parameter as the page shows it: its choices (labels, in the calibration file's order) or
    its bounds, and its best value."""

    name: str
    best: Any = None
    choices: list[str] | None = None
    bounds: tuple[float, float] | None = None

    def label(self, text: str) -> str:
        """A choice value as written in some file, as one of the choice labels: profiles.csv may say
        ``2.0`` for the choice ``2`` (pandas wrote a column of numbers)."""
        if self.choices is None or text in self.choices:
            return text
        try:
            x = float(text)
        except ValueError:
            return text
        for c in self.choices:
            try:
                if float(c) == x:
                    return c
            except ValueError:
                continue
        return text


@dataclass
class CalibrationDir:
    """A calibration directory's files, checked. ``None``: the file is missing; an empty table: the
    file has no rows (a 1-byte file, as ``--no-loo`` or ``--profile-points 0`` write)."""

    name: str
    fit: dict
    params: list[Param]
    residuals: pd.DataFrame
    loo: pd.DataFrame | None
    profiles: pd.DataFrame | None
    near: pd.DataFrame | None
    evaluations: int | None  #: rows of evaluations.csv
    spec_text: str | None
    preset_text: str | None
    notes: list[str] = field(default_factory=list)  #: files that could not be read, said on the page


#: This page's rules beside :data:`PAGE_CSS`.
CALIBRATION_CSS = """.note { background: #eef3fa; border: 1px solid #9db4d6; padding: 8px 12px; margin: 8px 0; }
.omitted { color: #555; font-style: italic; }
"""


def _text(path: Path, required: bool) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ReportError(f"{path}: missing (a finished calibration writes it)") from None
        return None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read ({exc.strerror or reason(exc)})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _csv(path: Path, columns: list[str], numeric: list[str], required: bool = False) -> pd.DataFrame | None:
    """A CSV file as text, its ``columns`` there and its ``numeric`` columns numbers; an empty file is a
    table with no rows."""
    text = _text(path, required)
    if text is None:
        return None
    if not text.strip():
        return pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    try:
        table = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise ReportError(f"{path}: not a readable CSV file ({reason(exc)})") from None
    missing = [c for c in columns if c not in table]
    if missing:
        raise ReportError(f"{path}: no column {missing[0]!r}")
    for c in numeric:
        for i, v in enumerate(table[c]):
            try:
                float(v)
            except ValueError:
                raise ReportError(
                    f"{path}: column {c!r}, data row {i + 1}: {shown(v, 40)} is not a number"
                ) from None
    return table


def _floats(col: pd.Series) -> np.ndarray:
    return np.array([float(v) for v in col], dtype=float)


def _read_fit(path: Path) -> dict:
    text = _text(path, required=True)
    try:
        fit = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(fit, dict):
        raise ReportError(f"{path}: a JSON {type(fit).__name__}, not an object")
    if not isinstance(fit.get("best"), dict):
        raise ReportError(f"{path}: best: {'missing' if 'best' not in fit else 'not an object'}")
    if "rms_rel_error" not in fit:
        raise ReportError(f"{path}: missing key 'rms_rel_error'")
    for key in ("rms_rel_error", "max_abs_rel_error", "loo_max_abs_rel_error"):
        v = fit.get(key)
        if (v is not None or key == "rms_rel_error") and not is_finite_number(v):
            raise ReportError(f"{path}: {key} is {shown(v, 40)}, it must be a finite number")
    for key in ("identification", "near_equivalent"):
        if fit.get(key) is not None and not isinstance(fit[key], dict):
            raise ReportError(f"{path}: {key} is {shown(fit[key], 40)}, it must be an object")
    near = fit.get("near_equivalent") or {}
    if near.get("tolerance") is not None and not is_number(near["tolerance"]):
        raise ReportError(
            f"{path}: near_equivalent.tolerance is {shown(near['tolerance'], 40)}, not a number"
        )
    if near.get("ranges") is not None and not isinstance(near["ranges"], dict):
        raise ReportError(f"{path}: near_equivalent.ranges is {shown(near['ranges'], 40)}, not an object")
    return fit


def _read_spec(path: Path, text: str | None, notes: list[str]) -> dict:
    """The calibration file, for the parameters' bounds and choices; a page is still built without it."""
    if text is None:
        return {}
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        notes.append(f"{path.name} is not valid YAML; parameter bounds and choices are not shown.")
        return {}
    return spec if isinstance(spec, dict) else {}


def _choice_text(value: Any) -> str:
    """A choice as pandas writes it into a CSV cell (``None`` as an empty cell)."""
    return "" if value is None else str(value)


def _shown(label: str) -> str:
    """A choice label as drawn (an empty label is no category to a plot, and invisible in a table)."""
    return "(none)" if label == "" else label


def _params(fit: dict, spec: dict, profiles: pd.DataFrame | None, near: pd.DataFrame | None) -> list[Param]:
    """The free parameters, in the calibration file's order, then any other a file names. A parameter
    is a choice if the calibration file says so, else if fit.json lists its near-equivalent values as
    strings (choices, as repr()), else if a file holds a value of it that is not a number."""
    declared = spec.get("parameters") if isinstance(spec.get("parameters"), dict) else {}
    ranges = (fit.get("near_equivalent") or {}).get("ranges") or {}

    def seen(name: str) -> list[str]:
        values = [] if near is None or name not in near else list(near[name])
        if profiles is not None:
            values += list(profiles.loc[profiles["parameter"] == name, "value"])
        return values

    names = [str(k) for k in declared] + [str(k) for k in fit["best"]]
    names += [] if profiles is None else list(profiles["parameter"])
    names += [] if near is None else [c for c in near.columns if c != "rms"]
    out = []
    for name in dict.fromkeys(names):
        p = Param(name, fit["best"].get(name))
        d = declared.get(name) if isinstance(declared.get(name), dict) else {}
        rng = ranges.get(name)
        if isinstance(d.get("choices"), list):
            p.choices = [_choice_text(c) for c in d["choices"]]
        elif isinstance(d.get("bounds"), list) and len(d["bounds"]) == 2:
            if all(is_finite_number(b) for b in d["bounds"]):
                p.bounds = (float(d["bounds"][0]), float(d["bounds"][1]))
        elif isinstance(rng, list) and rng and all(isinstance(v, str) for v in rng):
            p.choices = [_literal(v) for v in rng]
        elif not all(_is_float(v) for v in seen(name)):
            p.choices = []
        if p.choices is not None:  # values the files hold that the list lacks, last
            extra = seen(name) + ([] if p.best is None else [_choice_text(p.best)])
            p.choices += [v for v in dict.fromkeys(p.label(x) for x in extra) if v not in p.choices]
        out.append(p)
    return out


def _literal(text: str) -> str:
    try:
        return _choice_text(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_calibration_dir(d: Path) -> CalibrationDir:
    """Every file checked before anything is written: a bad directory is one :class:`ReportError`."""
    d = Path(d)
    if not d.is_dir():
        raise ReportError(f"{d}: not a directory")
    fit = _read_fit(d / "fit.json")
    residuals = _csv(
        d / "residuals.csv",
        ["row", "metric", "measured", "simulated", "rel_error"],
        ["measured", "simulated", "rel_error"],
        required=True,
    )
    if residuals.empty:
        raise ReportError(f"{d / 'residuals.csv'}: no rows (a calibration writes one per measured number)")
    loo = _csv(
        d / "leave_one_out.csv",
        ["row", "metric", "measured", "predicted", "rel_error"],
        ["measured", "predicted", "rel_error"],
    )
    profiles = _csv(d / "profiles.csv", ["parameter", "value", "rms"], ["rms"])
    near = _csv(d / "near_equivalent.csv", ["rms"], ["rms"])
    evaluations = _csv(d / "evaluations.csv", ["rms"], [])
    notes: list[str] = []
    spec_text = _text(d / "calibration.yaml", required=False)
    spec = _read_spec(d / "calibration.yaml", spec_text, notes)
    params = _params(fit, spec, profiles, near)
    for p in params:  # a continuous parameter's values are numbers, or it could not be plotted
        if p.choices is not None:
            continue
        for path, col in (
            (d / "near_equivalent.csv", near[p.name] if near is not None and p.name in near else []),
            (
                d / "profiles.csv",
                [] if profiles is None else profiles.loc[profiles["parameter"] == p.name, "value"],
            ),
        ):
            bad = [v for v in col if not _is_float(v)]
            if bad:
                raise ReportError(f"{path}: {p.name}: {shown(bad[0], 40)} is not a number")
    for name, table in (
        ("leave_one_out.csv", loo),
        ("profiles.csv", profiles),
        ("near_equivalent.csv", near),
    ):
        if table is None:
            notes.append(f"{name} is missing from the directory.")
    return CalibrationDir(
        name=str(fit.get("name", d.name)),
        fit=fit,
        params=params,
        residuals=residuals,
        loo=loo,
        profiles=profiles,
        near=near,
        evaluations=None if evaluations is None else len(evaluations),
        spec_text=spec_text,
        preset_text=_text(d / "preset.yaml", required=False),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------
# Numbers for people
# ---------------------------------------------------------------------------------------------------


def _pct(x: float | None, signed: bool = False) -> str:
    """A relative error as a percentage, three significant digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.3g}%" if signed else f"{100 * x:.3g}%"


def _value(v: Any) -> str:
    """A parameter value from fit.json."""
    if isinstance(v, float):
        return num(v)
    return str(v)


def _tolerance(c: CalibrationDir) -> float | None:
    tol = (c.fit.get("near_equivalent") or {}).get("tolerance")
    return float(tol) if is_number(tol) else None


def _threshold(c: CalibrationDir) -> float | None:
    """RMS relative error at or below which a parameter set fits about equally well."""
    tol = _tolerance(c)
    return None if tol is None else float(c.fit["rms_rel_error"]) + tol


def _not_identified(c: CalibrationDir) -> list[str]:
    """fit.json's parameters with a flat profile (a list; anything else there is taken as one name)."""
    flat = (c.fit.get("identification") or {}).get("not_identified") or []
    return [str(f) for f in flat] if isinstance(flat, list) else [str(flat)]


def _json(v: Any, limit: int = 400) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# Figures: each returns the figure and the rows behind it
# ---------------------------------------------------------------------------------------------------


def _error_bars(table: pd.DataFrame, other: str, title: str, ytitle: str) -> tuple[go.Figure, pd.DataFrame]:
    """Relative error (%) per row, one bar per metric: ``other`` is the simulated or predicted column."""
    rows = list(dict.fromkeys(table["row"]))
    rel = _floats(table["rel_error"]) * 100
    fig = go.Figure()
    for i, metric in enumerate(dict.fromkeys(table["metric"])):
        mask = (table["metric"] == metric).to_numpy()
        sub = table[mask]
        hover = [
            f"<b>{_esc(r['row'])}</b><br>{_esc(metric)}<br>measured {_esc(_cell(r['measured']))}<br>"
            f"{other} {_esc(_cell(r[other]))}<br>error {_pct(float(r['rel_error']), True)}"
            for _, r in sub.iterrows()
        ]
        fig.add_bar(
            name=_esc(metric),
            x=[_esc(r) for r in sub["row"]],
            y=rel[mask],
            marker_color=COLORS[i % len(COLORS)],
            text=hover,
            hovertemplate="%{text}<extra></extra>",
            textposition="none",
        )
    fig.update_layout(
        barmode="group",
        title=_esc(title),
        height=380,
        xaxis=dict(
            title="row", type="category", categoryorder="array", categoryarray=[_esc(r) for r in rows]
        ),
        yaxis=dict(title=ytitle, zeroline=True, zerolinecolor="#444", zerolinewidth=1),
        legend=dict(orientation="h", y=-0.25),
        margin=dict(l=70, r=20, t=50, b=90),
    )
    data = table.copy()
    data["rel_error_pct"] = [repr(float(v)) for v in rel]
    return fig, data


def residuals_figure(c: CalibrationDir) -> tuple[go.Figure, pd.DataFrame]:
    return _error_bars(
        c.residuals,
        "simulated",
        "Residuals of the fit: simulated / measured - 1",
        "relative error (%)",
    )


def loo_figure(c: CalibrationDir) -> tuple[go.Figure, pd.DataFrame]:
    return _error_bars(
        c.loo,
        "predicted",
        "Leave-one-out: each row predicted by a fit to the other rows",
        "prediction error (%)",
    )


def _log_axis(values: np.ndarray) -> bool:
    """A logarithmic axis for values orders of magnitude apart (calibrate searches such bounds in log)."""
    v = values[np.isfinite(values)]
    return bool(v.size) and v.min() > 0 and v.max() / v.min() > 10


def profiles_figure(c: CalibrationDir) -> tuple[go.Figure, pd.DataFrame]:
    """One panel per parameter: the best RMS error with it held at each value, the others refitted;
    the band from the best fit's RMS up to best + tolerance is where a value fits about equally well."""
    prof = c.profiles
    names = list(dict.fromkeys(prof["parameter"]))
    by_name = {p.name: p for p in c.params}
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = make_subplots(
        rows=nrows,
        cols=cols,
        subplot_titles=[_esc(n) for n in names],
        horizontal_spacing=0.08,
        vertical_spacing=min(0.3, 0.45 / max(nrows - 1, 1)) if nrows > 1 else 0.1,
    )
    best = float(c.fit["rms_rel_error"])
    top = _threshold(c)
    rms_all = _floats(prof["rms"])
    log_y = _log_axis(np.append(rms_all, best if best > 0 else np.nan)) and best > 0 and (rms_all > 0).all()
    data = []
    for i, name in enumerate(names):
        r, col = i // cols + 1, i % cols + 1
        p = by_name.get(name, Param(name))
        sub = prof[prof["parameter"] == name]
        rms = _floats(sub["rms"])
        if p.choices is not None:
            labels = [p.label(v) for v in sub["value"]]
            order = sorted(range(len(labels)), key=lambda j: p.choices.index(labels[j]))
            x = [_esc(_shown(labels[j])) for j in order]
            xaxis = dict(
                type="category", categoryorder="array", categoryarray=[_esc(_shown(v)) for v in p.choices]
            )
            best_x = _esc(_shown(p.label(_choice_text(p.best)))) if p.best is not None else None
        else:
            xv = _floats(sub["value"])
            order = list(np.argsort(xv, kind="stable"))
            x = xv[order]
            xaxis = dict(type="log" if _log_axis(xv) else "linear")
            best_x = float(p.best) if is_number(p.best) else None
        y = rms[order] * 100
        within = [bool(top is not None and v <= top) for v in rms[order]]
        fig.add_scatter(
            x=x,
            y=y,
            mode="markers+lines",
            name="profile",
            showlegend=i == 0,
            legendgroup="profile",
            line=dict(color=COLORS[0], width=1.5),
            marker=dict(size=8, color=["#54a24b" if w else COLORS[0] for w in within]),
            hovertemplate=f"{_esc(name)} = %{{x}}<br>RMS %{{y:.4g}}%<extra></extra>",
            row=r,
            col=col,
        )
        if best_x is not None:
            fig.add_scatter(
                x=[best_x],
                y=[best * 100],
                mode="markers",
                name="best fit",
                showlegend=i == 0,
                legendgroup="best",
                marker=dict(symbol="star", size=14, color=COLORS[3], line=dict(color="black", width=1)),
                hovertemplate=f"best fit: {_esc(name)} = %{{x}}<br>RMS %{{y:.4g}}%<extra></extra>",
                row=r,
                col=col,
            )
        if top is not None:
            fig.add_hrect(
                y0=best * 100, y1=top * 100, fillcolor="#54a24b", opacity=0.15, line_width=0, row=r, col=col
            )
            fig.add_hline(y=top * 100, line_dash="dash", line_color="#54a24b", line_width=1.5, row=r, col=col)
        fig.update_xaxes(xaxis, row=r, col=col)
        fig.update_yaxes(type="log" if log_y else "linear", row=r, col=col)
        for j in order:
            v = sub["value"].iloc[j]
            data.append(
                {
                    "parameter": name,
                    "value": v,
                    "rms": sub["rms"].iloc[j],
                    "rms_pct": repr(float(rms[j]) * 100),
                    "fits_about_equally_well": str(top is not None and rms[j] <= top),
                }
            )
    fig.update_yaxes(title_text="RMS relative error (%)", col=1)
    band = f", band to best + tolerance = {_pct(top)}" if top is not None else ""
    fig.update_layout(
        title=_esc(f"Residual profiles (best RMS {_pct(best)}{band})"),
        height=120 + 300 * nrows,
        legend=dict(orientation="h", y=-0.12 if nrows == 1 else -0.06),
        margin=dict(l=70, r=20, t=90, b=60),
    )
    return fig, pd.DataFrame(
        data, columns=["parameter", "value", "rms", "rms_pct", "fits_about_equally_well"]
    )


def _sample(n: int, limit: int) -> np.ndarray:
    """``limit`` evenly spaced positions of ``n`` (the first and the last included)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(int))


def near_figure(c: CalibrationDir) -> tuple[go.Figure, pd.DataFrame, int]:
    """The near-equivalent parameter sets as lines through the parameters and the RMS error, best first;
    more than :data:`MAX_NEAR` are thinned evenly in order of RMS (the best kept). Returns the figure,
    the rows drawn and how many the file has."""
    near = c.near
    rms = _floats(near["rms"])
    order = np.argsort(rms, kind="stable")
    keep = order[_sample(len(order), MAX_NEAR)]
    rows = near.iloc[keep].copy()
    by_name = {p.name: p for p in c.params}
    dims = []
    for col in [k for k in near.columns if k != "rms"]:
        p = by_name.get(col, Param(col))
        if p.choices is not None:
            labels = [p.label(v) for v in rows[col]]
            codes = [p.choices.index(v) for v in labels]
            rows[f"{col} (code)"] = [str(v) for v in codes]
            dims.append(
                dict(
                    label=_esc(col),
                    values=codes,
                    tickvals=list(range(len(p.choices))),
                    ticktext=[_esc(_shown(v)) for v in p.choices],
                    range=[0, max(len(p.choices) - 1, 1)],
                )
            )
        else:
            values = _floats(rows[col])
            dims.append(dict(label=_esc(col), values=values))  # the set's own range: trade-offs show
    pct = rms[keep] * 100
    rows["rms_pct"] = [repr(float(v)) for v in pct]
    dims.append(dict(label="RMS relative error (%)", values=pct))
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line=dict(
                color=pct,
                colorscale="Viridis",
                reversescale=True,  # the better, the brighter
                showscale=True,
                colorbar=dict(title="RMS (%)"),
            ),
            labelangle=-15,
        )
    )
    fig.update_layout(
        title="Parameter sets that fit about equally well (colour: RMS relative error)",
        height=440,
        margin=dict(l=90, r=90, t=110, b=40),
    )
    return fig, rows, len(near)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Cells are markup already escaped by the caller."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table class=grid><tr>{th}</tr>{body}</table>"


def _searched(p: Param) -> str:
    if p.choices is not None:
        return "choices " + ", ".join(_esc(_shown(v)) for v in p.choices)
    if p.bounds is not None:
        return f"{_esc(num(p.bounds[0]))} to {_esc(num(p.bounds[1]))}"
    return "n/a"


def _identified(c: CalibrationDir, p: Param) -> str:
    if p.name in _not_identified(c):
        return "<b>no</b>: flat profile"
    if c.profiles is not None and (c.profiles["parameter"] == p.name).any():
        return "yes"
    return "not profiled"


def _best_table(c: CalibrationDir) -> str:
    rows = [
        [f"<code>{_esc(p.name)}</code>", _esc(_value(p.best)), _searched(p), _identified(c, p)]
        for p in c.params
        if p.name in c.fit["best"]
    ]
    return _table(["parameter", "best fit", "searched", "identified by the rows"], rows)


def _near_table(c: CalibrationDir) -> str:
    ranges = (c.fit.get("near_equivalent") or {}).get("ranges") or {}
    by_name = {p.name: p for p in c.params}
    rows = []
    order = [p.name for p in c.params if p.name in ranges] + [k for k in ranges if k not in by_name]
    for name in order:
        rng, p = ranges[name], by_name.get(name, Param(name))
        if isinstance(rng, list) and len(rng) == 2 and all(is_number(v) for v in rng):
            lo, hi = float(rng[0]), float(rng[1])
            span = "n/a"
            if p.bounds is not None and p.bounds[1] > p.bounds[0]:
                span = f"{(hi - lo) / (p.bounds[1] - p.bounds[0]):.1%}"
            rows.append([f"<code>{_esc(name)}</code>", f"{_esc(num(lo))} to {_esc(num(hi))}", span])
        elif isinstance(rng, list):
            share = f"{len(rng)} of {len(p.choices)} choices" if p.choices else "n/a"
            rows.append(
                [f"<code>{_esc(name)}</code>", ", ".join(_esc(_shown(_literal(str(v)))) for v in rng), share]
            )
        else:
            rows.append([f"<code>{_esc(name)}</code>", _esc(_json(rng)), "n/a"])
    return _table(["parameter", "range among them", "of what was searched"], rows)


def _error_table(table: pd.DataFrame, other: str, extra: list[str]) -> str:
    head = ["row", "metric", "measured", _esc(other), "relative error", *(_esc(e) for e in extra)]
    rows = []
    for _, r in table.head(MAX_TABLE_ROWS).iterrows():
        rows.append(
            [
                _esc(r["row"]),
                _esc(r["metric"]),
                _esc(_cell(r["measured"])),
                _esc(_cell(r[other])),
                _pct(float(r["rel_error"]), signed=True),
                *(_esc(_cell(r[e])) for e in extra),
            ]
        )
    more = (
        f"<p class=meta>The first {MAX_TABLE_ROWS} of {len(table)} rows; all in the CSV file.</p>"
        if len(table) > MAX_TABLE_ROWS
        else ""
    )
    return _table(head, rows) + more


def _fit_table(c: CalibrationDir) -> str:
    fit = c.fit
    ident = fit.get("identification") or {}
    loo = fit.get("loo_max_abs_rel_error")
    rows = [
        [
            "RMS relative error",
            _pct(float(fit["rms_rel_error"])),
            "over every measured number (weighted as the calibration file says): what the fit minimises",
        ],
        [
            "Max relative error",
            _pct(float(fit["max_abs_rel_error"])) if is_number(fit.get("max_abs_rel_error")) else "n/a",
            "the worst single measured number (residuals below)",
        ],
        [
            "Leave-one-out max relative error",
            _pct(float(loo)) if is_number(loo) else "not run",
            "each row predicted by a fit to the other rows: how far the fit can be trusted off its rows",
        ],
    ]
    for key, label, doc in (
        ("measurements", "Measured numbers", "every measured value of every row"),
        (
            "independent_measurements",
            "Independent measured numbers",
            "a metric that is another's times a constant across the rows adds one number, not one per row",
        ),
        ("free_parameters", "Free parameters", "fitted"),
    ):
        if key in ident:
            rows.append([label, _esc(_json(ident[key])), doc])
    for key, v in ident.items():
        if key not in IDENT_KEYS:
            rows.append([_esc(key), _esc(_json(v)), "identification (fit.json)"])
    for key, v in fit.items():
        if key not in FIT_KEYS:
            rows.append([_esc(key), _esc(_json(v)), "fit.json"])
    body = "".join(f"<tr><td>{a}</td><td class=v>{b}</td><td class=d>{d}</td></tr>" for a, b, d in rows)
    return f"<table>{body}</table>"


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------


def _figure(i: int, fig: go.Figure, caption: str, name: str) -> str:
    href = f"{DATA_DIR}/{quote(name)}"
    return (
        f"<figure>{figure_html(fig, f'figure-{i}')}<figcaption>Figure {i + 1}. {caption} "
        f'Data: <a href="{href}">{_esc(name)}</a></figcaption></figure>'
    )


def _pre(text: str | None, name: str) -> str:
    if text is None:
        return f"<p class=meta>{_esc(name)} is missing from the directory.</p>"
    return f'<p class=meta><a href="{quote(name)}">{_esc(name)}</a></p><pre>{_esc(text)}</pre>'


def write_calibration_report(cal_dir: Path) -> Path:
    """(Re)build ``cal_dir/report.html`` and ``cal_dir/report_data/*.csv`` from the calibration directory.

    A missing fit.json or residuals.csv, or an unreadable file, raises :class:`ReportError` (bad input)
    before anything is written; the old report, if any, stays as it was.
    """
    out = Path(cal_dir)
    c = read_calibration_dir(out)
    fit = c.fit
    ident = fit.get("identification") or {}
    near_info = fit.get("near_equivalent") or {}
    tol, top = _tolerance(c), _threshold(c)
    best_rms = float(fit["rms_rel_error"])

    data: dict[str, pd.DataFrame] = {}
    sections: list[str] = []
    n_fig = 0

    # Residuals
    fig, res = residuals_figure(c)
    data["residuals.csv"] = res
    caption = (
        "Relative error of each measured number at the best fit (simulated / measured - 1), one bar "
        "per metric; 0 is a perfect match."
    )
    sections.append(
        "<h2>Residuals</h2>\n"
        + _figure(n_fig, fig, caption, "residuals.csv")
        + _error_table(c.residuals, "simulated", [])
    )
    n_fig += 1

    # Leave-one-out
    if c.loo is not None and len(c.loo):
        fig, loo = loo_figure(c)
        data["leave_one_out.csv"] = loo
        caption = (
            "For each row: the parameters fitted to every other row, then this row's metrics predicted "
            "with them. Errors much larger than the residuals mean the fit leans on single rows."
        )
        extra = [col for col in c.loo.columns if col == "fit_rms_on_others" or col.startswith("fitted ")]
        body = _figure(n_fig, fig, caption, "leave_one_out.csv") + _error_table(c.loo, "predicted", extra)
        n_fig += 1
    else:
        why = "is missing" if c.loo is None else "is empty"
        body = (
            f"<p class=omitted>Leave-one-out was not run: leave_one_out.csv {why} (calibrate "
            "--no-loo, or a calibration of a single row), so there is no estimate of how well the fit "
            "predicts a row it was not fitted on.</p>"
        )
    sections.append("<h2>Leave-one-out</h2>\n" + body)

    # Profiles
    if c.profiles is not None and len(c.profiles):
        fig, prof = profiles_figure(c)
        data["profiles.csv"] = prof
        flat = _not_identified(c)
        verdict = (
            f"fit.json: the rows do not identify {', '.join(_esc(f) for f in flat)}."
            if flat
            else "Every profiled parameter leaves the band somewhere, so the rows identify each of them."
        )
        band = (
            f"The shaded band runs from the best fit's RMS ({_pct(best_rms)}) to best + tolerance "
            f"({_pct(top)}); green points lie in it and fit about equally well. "
            if top is not None
            else "fit.json gives no tolerance, so no band is drawn. "
        )
        caption = (
            "Each panel: the best RMS relative error with that parameter held at each value and the other "
            f"parameters fitted again; the star is the best fit. {band}A flat profile, every point in the "
            "band, means the rows do not identify the parameter: any value in its range fits about as "
            f"well. {verdict}"
        )
        body = _figure(n_fig, fig, caption, "profiles.csv")
        n_fig += 1
    else:
        why = "is missing" if c.profiles is None else "is empty"
        body = (
            f"<p class=omitted>No residual profiles: profiles.csv {why} (calibrate --profile-points 0), "
            "so the report cannot show which parameters the rows identify.</p>"
        )
    sections.append("<h2>Residual profiles</h2>\n" + body)

    # Near-equivalent set
    if c.near is not None and len(c.near):
        fig, rows, total = near_figure(c)
        data["near_equivalent.csv"] = rows
        thinned = (
            f" {len(rows):,} of the file's {total:,} rows are drawn, evenly spaced in order of RMS error "
            "(the best included); all are in near_equivalent.csv."
            if len(rows) < total
            else ""
        )
        caption = (
            "Each line is one parameter set the optimiser tried whose RMS error is within the tolerance of "
            "the best, through its parameter values and its RMS error (brighter is better). Each axis spans "
            "the values in the set (the table above gives each range as a share of what was searched); "
            "lines crossing between two axes are parameters trading off against each other."
            f"{thinned} Drag along an axis to filter."
        )
        body = _figure(n_fig, fig, caption, "near_equivalent.csv")
        n_fig += 1
    else:
        why = "is missing" if c.near is None else "has no rows"
        body = f"<p class=omitted>near_equivalent.csv {why}: no parameter sets to draw.</p>"
    sections.append("<h2>Parameter sets that fit about equally well</h2>\n" + body)

    # Headline
    title = _esc(f"Calibration {c.name}")
    note = ident.get("note")
    n = ident.get("independent_measurements", ident.get("measurements"))
    k = ident.get("free_parameters")
    few = is_finite_number(n) and is_finite_number(k) and k >= n  # the fit can match any rows
    note_html = (
        f"<p class={'warn' if few else 'note'}>Identification: {_esc(_json(note))}</p>" if note else ""
    )
    redundant = ident.get("redundant")
    if isinstance(redundant, dict) and redundant:
        items = "".join(
            f"<li><code>{_esc(m)}</code>: {_esc(_json(why))}</li>" for m, why in redundant.items()
        )
        note_html += f"<p class=meta>Measured metrics that repeat another:</p><ul>{items}</ul>"
    elif redundant:  # another shape than this report knows: shown as written
        note_html += f"<p class=meta>Redundant: {_esc(_json(redundant))}</p>"
    flat = _not_identified(c)
    warn = (
        f"<p class=warn>Not identified by these rows: {', '.join(f'<code>{_esc(f)}</code>' for f in flat)}. "
        + ("Its residual profile stays" if len(flat) == 1 else "Their residual profiles stay")
        + " within the tolerance of the best fit across the whole range searched, so a fitted value there "
        "is one of many that fit about equally well; only a row that depends on it can pin it down.</p>"
        if flat
        else ""
    )
    count = near_info.get("count")
    tried = f" of the {c.evaluations:,} points the optimiser tried (evaluations.csv)" if c.evaluations else ""
    if tol is not None:
        near_intro = (
            f"<b>{_esc(_json(count)) if count is not None else 'n/a'}</b> parameter combinations{tried} fit "
            f"about equally well: their RMS relative error is within {_esc(f'{100 * tol:.3g}')} percentage points "
            f"(the tolerance) of the best, at most {_pct(top)}. These are the parameter combinations these rows cannot tell "
            "apart, so each fitted value is only known to within its range below; a range across the whole "
            "search means the rows say nothing about that parameter. The set is what the optimiser happened "
            "to try, so the true ranges may be somewhat wider."
        )
    else:
        near_intro = "fit.json gives no tolerance for the parameter sets that fit about equally well."
    near_table = _near_table(c) if near_info.get("ranges") else ""
    notes = "".join(f"<p class=meta>{_esc(n)}</p>" for n in c.notes)
    page = f"""{page_head(title, CALIBRATION_CSS)}<h1>{title}</h1>
<p class=meta>Free workload parameters fitted to measured rows by <code>python -m cosim calibrate</code>.
Built from this calibration directory alone: <a href="fit.json">fit.json</a>,
<a href="residuals.csv">residuals.csv</a>, <a href="leave_one_out.csv">leave_one_out.csv</a>,
<a href="profiles.csv">profiles.csv</a>, <a href="near_equivalent.csv">near_equivalent.csv</a>,
<a href="evaluations.csv">evaluations.csv</a>, <a href="preset.yaml">preset.yaml</a>,
<a href="calibration.yaml">calibration.yaml</a>. Metric definitions: docs/metrics.md.</p>
{notes}<h2>Headline</h2>
{_fit_table(c)}
{note_html}{warn}<h3>Best parameters</h3>
{_best_table(c)}
<h3>Parameter combinations that fit about equally well</h3>
<p>{near_intro}</p>
{near_table}
{_plotlyjs()}{"".join(sections)}
<h2>Fitted board preset</h2>
<p class=meta>The base workload's hardware with the fitted values: copy it to workloads/boards/&lt;name&gt;.yaml
to use it as <code>hardware.preset: &lt;name&gt;</code>.</p>
{_pre(c.preset_text, "preset.yaml")}
<h2>Calibration file</h2>
{_pre(c.spec_text, "calibration.yaml")}
</body></html>
"""
    return write_page_and_data(out, page, data)
