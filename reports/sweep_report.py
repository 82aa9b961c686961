"""The report of a design-space sweep, built from its sweep directory alone (``sweep.yaml``,
``results.csv``, ``pareto.csv``), so it can be rebuilt after the sweep process is gone.

The same rules as the run report, whose helpers it uses: one self-contained page (plotly.js embedded once,
the machine may be offline), every value from the directory escaped where it lands, the page replaced
atomically. The numbers behind each figure are written beside the page (``report_data/*.csv``, linked
from the captions) so a point seen in a figure can be checked or replotted without parsing HTML.

The CSV files are read as text: pandas would otherwise turn a parameter value such as ``None`` or ``NA``
into a missing value, or a hash key made of digits into a number, and the figures' CSV files would no
longer say what ``results.csv`` says.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cosim.config import WorkloadError, load_yaml
from cosim.fmt import num
from reports.inputs import ReportError
from reports.run_report import (
    DATA_DIR,
    PLOTLYJS_FILE,
    _esc,
    _plotlyjs,
    figure_block,
    page_head,
    write_page_and_data,
    write_plotlyjs,
)

__all__ = ["ReportError", "write_sweep_report"]

#: Figures of objective pairs (3 objectives give 3 pairs, 4 give 6); parameters shown against a lone objective.
MAX_FIGURES = 6
MAX_ROWS = 50  #: rows of the best-configurations and failed-points tables
#: summary.json keys (docs/metrics.md), RTL resource estimates and quality estimates, for axis titles.
UNITS = {
    "latency_s": "s",
    "dense_latency_s": "s",
    "dense_full_attention_latency_s": "s",
    "speedup_vs_dense": "x",
    "speedup_vs_dense_full_attention": "x",
    "replay_ratio": "fraction",
    "tau": "logit",
    "energy_j": "J",
    "dense_energy_j": "J",
    "avg_power_w": "W",
    "tokens_per_s": "tok/s",
    "tokens_per_j": "tok/J",
    "core_utilization": "fraction",
    "memory_bandwidth_utilization": "fraction",
    "drs_events": "count",
    "decode_steps": "count",
    "luts": "count",
    "ffs": "count",
    "dsps": "count",
    "brams": "count",
    "urams": "count",
    "quality_psnr_db": "dB",
    "quality_forced_psnr_db": "dB",
}
COLOR_OK, COLOR_VIOLATES, COLOR_FRONT = "#4c78a8", "#c8c8c8", "#e45756"


@dataclass
class SweepDir:
    """A sweep directory's files, checked, as text (see the module doc). ``results`` holds the screening
    points, which the front is taken from; ``confirm`` the re-runs of the front (``confirm`` in the sweep
    file), which are another mode's numbers for the same parameters and so are not plotted with them."""

    name: str
    spec: dict
    parameters: list[str]
    objectives: dict[str, str]
    constraints: dict
    results: pd.DataFrame
    confirm: pd.DataFrame
    front: list[str]  #: pareto.csv's keys, in its order


#: This page's rules beside :data:`PAGE_CSS`.
SWEEP_CSS = """.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.err { color: #a12; white-space: pre-wrap; }
"""


def _csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReportError(f"{path}: missing (a finished sweep writes it)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ReportError(f"{path}: not a readable CSV file ({exc})") from None


def read_sweep_dir(out: Path) -> SweepDir:
    """Every file checked before anything is written: a bad directory is one :class:`ReportError`."""
    try:
        spec = load_yaml(out / "sweep.yaml")
    except WorkloadError as exc:
        raise ReportError(str(exc)) from None
    if not isinstance(spec, dict):
        raise ReportError(f"{out / 'sweep.yaml'}: not a sweep file (a YAML mapping)")
    for section in ("parameters", "objectives"):
        if not isinstance(spec.get(section), dict) or not spec[section]:
            raise ReportError(f"{out / 'sweep.yaml'}: {section}: missing or empty")
    constraints = spec.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise ReportError(f"{out / 'sweep.yaml'}: constraints: not a mapping")
    parameters = [str(k) for k in spec["parameters"]]
    objectives = {str(k): str(v) for k, v in spec["objectives"].items()}
    wrong = [k for k, v in objectives.items() if v not in ("min", "max")]
    if wrong:
        raise ReportError(f"{out / 'sweep.yaml'}: objectives.{wrong[0]}: min or max")

    results = _csv(out / "results.csv")
    wanted = ["key", *parameters, "status", "constraints_met"]
    missing = [c for c in wanted if c not in results]
    if not missing and (results["status"] == "done").any():  # a sweep where every point failed has none
        missing = [m for m in objectives if m not in results]
    if missing:
        raise ReportError(f"{out / 'results.csv'}: no column {missing[0]!r}")
    for c in ["error", *objectives]:  # no point finished: results.csv has no metric columns
        if c not in results:
            results[c] = ""
    stage = results["stage"] if "stage" in results else pd.Series("screen", index=results.index)
    results, confirm = results[stage == "screen"], results[stage != "screen"]
    pareto = _csv(out / "pareto.csv")
    if "key" not in pareto:
        raise ReportError(f"{out / 'pareto.csv'}: no column 'key'")
    front = pareto["key"].tolist()
    unknown = sorted(set(front) - set(results["key"]))
    if unknown:
        raise ReportError(f"{out / 'pareto.csv'}: key {unknown[0]} is not in results.csv")
    name = str(spec.get("name", out.name))
    return SweepDir(name, spec, parameters, objectives, constraints, results, confirm, front)


# ---------------------------------------------------------------------------------------------------
# Columns as plotted
# ---------------------------------------------------------------------------------------------------


def _kind(col: pd.Series) -> str:
    """``number``, ``bool`` or ``text`` (an empty cell, a point that failed, is missing, not text)."""
    vals = [v for v in col.tolist() if v != ""]
    if vals and all(v in ("True", "False") for v in vals):
        return "bool"
    try:
        [float(v) for v in vals]
    except ValueError:
        return "text"
    return "number"


def _levels(col: pd.Series) -> list[str]:
    if _kind(col) == "bool":
        return ["False", "True"]
    vals = sorted(set(col.tolist()) - {""})
    return vals + [""] if (col == "").any() else vals


def _values(col: pd.Series) -> np.ndarray:
    """Numbers to plot: a number as is, a boolean or a text value as its level's index (NaN if missing)."""
    kind = _kind(col)
    if kind == "number":
        return np.array([float(v) if v != "" else np.nan for v in col], dtype=float)
    if kind == "bool":
        return np.array([{"False": 0.0, "True": 1.0}.get(v, np.nan) for v in col], dtype=float)
    index = {v: i for i, v in enumerate(_levels(col))}
    return np.array([float(index[v]) for v in col], dtype=float)


def _tick_labels(col: pd.Series) -> list[str] | None:
    """Tick text of a boolean or text column, whose values are plotted as level codes."""
    if _kind(col) == "number":
        return None
    return [v if v != "" else "(empty)" for v in _levels(col)]


def _unit(metric: str) -> str:
    return UNITS.get(metric, "")


def _title(metric: str, objectives: dict[str, str] | None = None) -> str:
    unit = _unit(metric)
    text = f"{metric} ({unit})" if unit else metric
    direction = (objectives or {}).get(metric)
    if direction in ("min", "max"):
        text += ", lower is better" if direction == "min" else ", higher is better"
    return _esc(text)


def _ticks(col: pd.Series, values_as_ticks: bool) -> dict:
    """Tick values and text of a boolean or text column (its level codes), or of a numeric parameter
    with a few values (a grid of 1, 2, 4 cores reads better as 1, 2, 4 than as 1, 1.5, 2, ...)."""
    labels = _tick_labels(col)
    if labels is not None:
        return dict(tickvals=list(range(len(labels))), ticktext=[_esc(t) for t in labels])
    if values_as_ticks:
        shown = {}
        for raw, v in zip(col, _values(col), strict=True):
            if math.isfinite(v):
                shown.setdefault(v, _cell(raw))
        if 0 < len(shown) <= 12:
            vals = sorted(shown)
            return dict(tickvals=vals, ticktext=[_esc(shown[v]) for v in vals])
    return {}


def _axis(col: pd.Series, title: str, parameter: bool = False) -> dict:
    ticks = _ticks(col, parameter)
    if _tick_labels(col) is not None:
        return dict(title=title, **ticks)
    v = _values(col)
    v = v[np.isfinite(v)]
    wide = v.size and v.min() > 0 and v.max() / v.min() >= 1000  # orders of magnitude apart
    return dict(title=title, type="log" if wide else "linear", **ticks)


def _cell(value: str) -> str:
    """A value from a CSV file for people: numbers to four significant digits, the rest as written."""
    try:
        x = float(value)
    except ValueError:
        return value
    if value.strip().lstrip("-").isdigit():
        return value
    return num(x) if math.isfinite(x) else value


def _hover(d: SweepDir, rows: pd.DataFrame, metrics: list[str]) -> list[str]:
    out = []
    for _, r in rows.iterrows():
        lines = [f"<b>{_esc(r['key'])}</b>"]
        lines += [f"{_esc(p)} = {_esc(_cell(r[p]))}" for p in d.parameters]
        for m in metrics:
            unit = f" {_unit(m)}" if _unit(m) not in ("", "fraction", "count") else ""
            lines.append(f"{_esc(m)} = {_esc(_cell(r[m]))}{_esc(unit)}")
        out.append("<br>".join(lines))
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---------------------------------------------------------------------------------------------------
# Figures: each returns the figure and the rows behind it
# ---------------------------------------------------------------------------------------------------


def _scatter(
    d: SweepDir, done: pd.DataFrame, x: str, y: str, title: str, best: str, metrics: list[str], join: bool
) -> tuple[go.Figure, pd.DataFrame]:
    """Every finished point at (x, y): grey if it violates a constraint, the front (or, with one
    objective, the best) in red, joined in order of ``x`` if ``join``. Codes of text values come from all
    finished points, so every trace shares the axis' tick labels."""
    xv, yv = _values(done[x]), _values(done[y])
    ok = np.isfinite(xv) & np.isfinite(yv)
    hi = done["key"].isin(d.front).to_numpy()
    meets = (done["constraints_met"] == "True").to_numpy()
    scatter = go.Scattergl if ok.sum() > 5000 else go.Scatter  # SVG gets slow past a few thousand markers
    fig = go.Figure()
    for mask, label, color, size in (
        (ok & ~meets & ~hi, "violates a constraint", COLOR_VIOLATES, 8),
        (ok & meets & ~hi, "meets the constraints", COLOR_OK, 8),
        (ok & hi, best, COLOR_FRONT, 11),
    ):
        idx = np.flatnonzero(mask)
        if not idx.size:
            continue
        front = color == COLOR_FRONT
        if front and join:
            idx = idx[np.lexsort((yv[idx], xv[idx]))]
        fig.add_trace(
            scatter(
                x=xv[idx],
                y=yv[idx],
                mode="lines+markers" if front and join else "markers",
                name=label,
                line=dict(color=color, width=1.5),
                marker=dict(color=color, size=size, line=dict(color="black", width=1 if front else 0)),
                text=_hover(d, done.iloc[idx], metrics),
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(
        title=_esc(title),
        xaxis=_axis(done[x], _title(x, d.objectives), parameter=x in d.parameters),
        yaxis=_axis(done[y], _title(y, d.objectives)),
        height=440,
        legend=dict(orientation="h", y=-0.22),
        margin=dict(l=70, r=20, t=50, b=90),
    )
    cols = list(dict.fromkeys(["key", *d.parameters, x, y, "constraints_met"]))
    data = done[ok][cols].assign(**{"on_front" if join else "best": [str(v) for v in hi[ok]]})
    return fig, data


def pair_figure(d: SweepDir, done: pd.DataFrame, a: str, b: str) -> tuple[go.Figure, pd.DataFrame]:
    metrics = list(dict.fromkeys([a, b, *d.objectives]))
    return _scatter(d, done, a, b, f"Pareto front: {a} vs {b}", "Pareto front", metrics, join=True)


def parameter_figure(d: SweepDir, done: pd.DataFrame, obj: str, param: str) -> tuple[go.Figure, pd.DataFrame]:
    """A lone objective has no pair to draw a front in: it is shown against each parameter instead."""
    return _scatter(d, done, param, obj, f"{obj} by {param}", "best", [obj], join=False)


def parallel_figure(d: SweepDir, done: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Parameters and objectives of every finished point, coloured by the first objective; a boolean or
    text column is drawn as level codes with the levels as tick text (the CSV has both)."""
    first = next(iter(d.objectives))
    finite = np.all([np.isfinite(_values(done[m])) for m in d.objectives], axis=0)
    rows = done[finite]
    columns = [*d.parameters, *d.objectives] + (["constraints_met"] if d.constraints else [])
    dims, data = [], rows[["key", *columns]].copy()
    for c in columns:
        values = _values(done[c])[finite]  # codes from all finished points, as the tick labels are
        dim = dict(label=_esc("meets constraints" if c == "constraints_met" else c), values=values)
        dim.update(_ticks(done[c], c in d.parameters))
        labels = _tick_labels(done[c])
        if labels is not None:
            dim["range"] = [0, max(len(labels) - 1, 1)]
            data[f"{c} (code)"] = values.astype(int)
        dims.append(dim)
    color = _values(done[first])[finite]
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line=dict(
                color=color,
                colorscale="Viridis",
                reversescale=d.objectives[first] == "min",  # the better, the brighter
                showscale=True,
                colorbar=dict(title=_title(first)),
            ),
            labelangle=-15,
        )
    )
    fig.update_layout(
        title=_esc(f"Parameters and objectives of every finished point (colour: {first})"),
        height=460,
        margin=dict(l=90, r=90, t=110, b=40),
    )
    return fig, data


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def _run_link(out: Path, key: str) -> str:
    """The relative address of the point's run, if one was written (``runs/<key>/``)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):  # a key from a file names no other path
        return ""
    run = out / "runs" / key
    if (run / "report.html").is_file():
        return f"runs/{quote(key)}/report.html"
    return f"runs/{quote(key)}/" if run.is_dir() else ""


def best_rows(d: SweepDir, out: Path) -> pd.DataFrame:
    """The front, best first in the first objective (then by key, so ties have one order)."""
    first, direction = next(iter(d.objectives.items()))
    front = d.results[d.results["key"].isin(d.front)]
    v = _values(front[first]) * (1 if direction == "min" else -1)
    front = front.iloc[np.lexsort((front["key"].to_numpy(), v))].head(MAX_ROWS)
    data = front[["key", *d.parameters, *d.objectives]].copy()
    data["run"] = [_run_link(out, k) for k in data["key"]]
    return data


def _best_table(d: SweepDir, best: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["#", "key", *d.parameters])
    head += "".join(f"<th>{_title(m)}</th>" for m in d.objectives) + "<th>run</th>"
    body = []
    for i, (_, r) in enumerate(best.iterrows(), 1):
        cells = [str(i), f"<code>{_esc(r['key'])}</code>"]
        cells += [_esc(_cell(r[p])) for p in d.parameters]
        cells += [_esc(_cell(r[m])) for m in d.objectives]
        link = r["run"]
        cells.append(
            f'<a href="{_esc(link)}">{"report" if link.endswith(".html") else "run"}</a>' if link else ""
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table class=grid><tr>{head}</tr>{''.join(body)}</table>"


def _failed_table(d: SweepDir, failed: pd.DataFrame) -> str:
    stage = ["stage"] if len(d.confirm) else []
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["key", *stage, *d.parameters, "error"])
    body = []
    for _, r in failed.head(MAX_ROWS).iterrows():
        error = r["error"] if len(r["error"]) <= 1000 else r["error"][:997] + "..."
        cells = [f"<code>{_esc(r['key'])}</code>", *(_esc(r[c]) for c in stage)]
        cells += [_esc(_cell(r[p])) for p in d.parameters]
        cells.append(f"<span class=err>{_esc(error)}</span>")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table class=grid><tr>{head}</tr>{''.join(body)}</table>"


def _bound(metric: str, bound) -> str:
    def show(v) -> str:
        return _esc(num(v) if isinstance(v, int | float) and not isinstance(v, bool) else json.dumps(v))

    if isinstance(bound, dict):
        sides = [f"{sign} {show(bound[k])}" for k, sign in (("min", "&ge;"), ("max", "&le;")) if k in bound]
        return f"{_esc(metric)} {' and '.join(sides)}"
    return f"{_esc(metric)} = {show(bound)}"


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------


def write_sweep_report(out: Path, shared_plotlyjs: bool = False) -> Path:
    """(Re)build ``out/report.html`` and ``out/report_data/*.csv`` from the sweep directory ``out``;
    ``shared_plotlyjs``: reference ``out/plotly.min.js`` (written here, shared with the front runs'
    reports) instead of embedding plotly.js.

    A missing or unreadable file raises :class:`ReportError` (bad input) before anything is written.
    """
    out = Path(out)
    d = read_sweep_dir(out)
    res = d.results
    done = res[res["status"] == "done"]
    failed_screen = res[res["status"] != "done"]
    failed = pd.concat([failed_screen, d.confirm[d.confirm["status"] != "done"]])
    meets = done[done["constraints_met"] == "True"]
    objs = list(d.objectives)

    figures: list[tuple[go.Figure, str, str, pd.DataFrame]] = []  # figure, caption, CSV name, its rows
    pairs = list(itertools.combinations(objs, 2))
    shown = len(pairs) if len(objs) >= 2 else len(d.parameters)
    cut = f" The first {MAX_FIGURES} of {shown} are shown." if shown > MAX_FIGURES else ""
    if len(done):
        if len(objs) >= 2:
            for a, b in pairs[:MAX_FIGURES]:
                fig, data = pair_figure(d, done, a, b)
                caption = (
                    f"{_esc(b)} against {_esc(a)}, every finished point; the front joined along {_esc(a)}."
                )
                figures.append((fig, caption, f"pareto_{_safe(a)}_vs_{_safe(b)}.csv", data))
        else:
            for p in d.parameters[:MAX_FIGURES]:
                fig, data = parameter_figure(d, done, objs[0], p)
                caption = f"{_esc(objs[0])} against {_esc(p)}, every finished point."
                figures.append((fig, caption, f"objective_{_safe(objs[0])}_vs_{_safe(p)}.csv", data))
        fig, data = parallel_figure(d, done)
        caption = (
            f"Every finished point as one line through its parameters and objectives, coloured by "
            f"{_esc(objs[0])} (brighter is better). Drag along an axis to filter."
        )
        figures.append((fig, caption, "parallel.csv", data))
    best = best_rows(d, out)

    data = {"best.csv": best, **{name: frame for _, _, name, frame in figures}}
    parts = [
        figure_block(fig, f"figure-{i}", f"Figure {i + 1}. {caption}", name)
        for i, (fig, caption, name, _) in enumerate(figures)
    ]

    objectives = ", ".join(f"{_esc(v)} {_title(m)}" for m, v in d.objectives.items())
    constraints = ", ".join(_bound(m, b) for m, b in d.constraints.items()) or "none"
    fixed = d.spec.get("fixed") or {}
    fixed = (
        ", ".join(f"{_esc(k)} = {_esc(json.dumps(v))}" for k, v in fixed.items())
        if isinstance(fixed, dict)
        else _esc(fixed)
    )
    strategy = d.spec.get("strategy") or {"kind": "grid"}
    title = _esc(f"Sweep {d.name}")
    confirm = ""
    if len(d.confirm):
        overrides = d.spec.get("confirm")
        if isinstance(overrides, dict):
            overrides = ", ".join(f"{k} = {json.dumps(v)}" for k, v in overrides.items())
        link = ' (<a href="confirmed.csv">confirmed.csv</a>)' if (out / "confirmed.csv").is_file() else ""
        confirm = (
            f"<br>The front re-run with {_esc(overrides)}: {_plural(len(d.confirm), 'run')}, "
            f"{(d.confirm['status'] != 'done').sum()} failed{link}; the figures show the screening runs."
        )
    if len(done):
        more = (
            f" (the first {MAX_ROWS} of {len(d.front)}; all in pareto.csv)" if len(d.front) > MAX_ROWS else ""
        )
        if len(objs) >= 2:
            heading, note = (
                "Pareto fronts",
                (
                    "Grey: violates a constraint; blue: meets them; red: the Pareto front, the points meeting "
                    "the constraints that no other such point beats in every objective."
                ),
            )
            if len(objs) > 2:
                note += " The front is taken in all objectives, so a front point may look beaten in one pair."
        else:
            heading = f"{objs[0]} by parameter"
            note = "Grey: violates a constraint; blue: meets them; red: the best point meeting them."
        body = f"""<h2>{_esc(heading)}</h2>
<p class=meta>{note}{cut} Hover over a point for its parameters.</p>
<div class=figs>{"".join(parts[:-1])}</div>
<h2>Parallel coordinates</h2>
{parts[-1]}
<h2>Best configurations</h2>
<p class=meta>The Pareto front, best {_esc(objs[0])} first{more}. Data:
<a href="{DATA_DIR}/best.csv">best.csv</a>.</p>
{_best_table(d, best) if len(best) else "<p>No finished point meets the constraints.</p>"}"""
    else:
        body = "<p class=warn>No point finished, so there is nothing to plot.</p>"
    if len(failed):
        more = (
            f" (the first {MAX_ROWS} of {len(failed)}; all in results.csv)" if len(failed) > MAX_ROWS else ""
        )
        body += f"\n<h2>Failed points</h2>\n<p class=meta>{len(failed)} failed{more}.</p>\n"
        body += _failed_table(d, failed)

    quality_note = ""
    if any(m.startswith("quality_") for m in [*d.objectives, *d.constraints]):
        from cosim.quality_model import LABEL

        quality_note = f"Quality metrics (quality_*): {_esc(LABEL)}.<br>\n"
    page = f"""{page_head(title, SWEEP_CSS)}<h1>{title}</h1>
<p><b>{len(res)}</b> points: <b>{len(done)}</b> done, <b>{len(failed_screen)}</b> failed,
<b>{len(meets)}</b> meet the constraints, <b>{len(d.front)}</b> on the Pareto front.{confirm}</p>
<p class=meta>Objectives: {objectives}.<br>Constraints: {constraints}.<br>
Parameters: {", ".join(_esc(p) for p in d.parameters)}; fixed: {fixed or "nothing"}; strategy: {_esc(json.dumps(strategy))}.<br>
{quality_note}Built from this sweep directory alone: <a href="sweep.yaml">sweep.yaml</a>, <a href="results.csv">results.csv</a>,
<a href="pareto.csv">pareto.csv</a>. Metric definitions: docs/metrics.md.</p>
{_plotlyjs(PLOTLYJS_FILE if shared_plotlyjs else None) if figures else ""}{body}
</body></html>
"""
    if figures and shared_plotlyjs:
        write_plotlyjs(out)  # before the page that needs it
    return write_page_and_data(out, page, data)
