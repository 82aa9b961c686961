"""Two or more runs side by side, built from their run directories alone (``python -m cosim compare``).

One page with the run report's rules (plotly.js embedded once so it opens offline, every value from a
run directory escaped where it lands) and its building blocks: the headline metrics of every run with
each run's difference from the first (the reference), what differs in their resolved workloads, the
decode time by kind of work, the time per layer and the energy by component. The numbers behind each
table and figure are written beside the page (``report_data/*.csv``), so a difference seen on the page
can be checked or replotted without parsing HTML.

Every directory is read and checked (:func:`reports.inputs.read_run_dir`) before anything is written;
the comparison lands through :func:`cosim.outdir.claim` like every other output directory, so it is
written whole or not at all and replaces only an earlier comparison.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import plotly.graph_objects as go

from accelerator.cost import PHASES
from cosim.errors import is_number
from cosim.fmt import num
from cosim.jsonio import dumps
from cosim.provenance import provenance
from reports.inputs import ReportError, RunFiles, read_run_dir
from reports.run_report import (
    DATA_DIR,
    METRIC_ROWS,
    PHASE_COLORS,
    _esc,
    _fmt,
    _plotlyjs,
    figure_block,
    page_head,
    write_page_and_data,
)

__all__ = ["Run", "ReportError", "read_runs", "write_comparison"]

#: Rows of the configuration-differences table shown on the page (all of them are in its CSV file).
MAX_CONFIG_ROWS = 40


@dataclass
class Run:
    """One compared run: its label (unique among the runs compared), the directory as given, its files."""

    label: str
    path: Path
    files: RunFiles

    @property
    def summary(self) -> dict:
        return self.files.summary


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


#: This page's rules beside :data:`PAGE_CSS`.
COMPARE_CSS = """table.grid { font-size: 0.92em; } td.dv { color: #555; text-align: right; } .meta { font-size: 0.9em; }
"""


def _labels(summaries: list[dict], paths: list[Path]) -> list[str]:
    """``workload · policy · DRS on|off · dir``: the directory's name, or as many of its last path parts
    as it takes to tell the runs apart (two ``runs/x`` of different parents)."""
    parts = [p.resolve().parts for p in paths]

    def labels(depth: int) -> list[str]:
        return [
            f"{s['workload']} · {s['policy']} · DRS {'on' if s['drs'] else 'off'} · {'/'.join(p[-depth:])}"
            for s, p in zip(summaries, parts, strict=True)
        ]

    for depth in range(1, max(len(p) for p in parts) + 1):
        out = labels(depth)
        if len(set(out)) == len(out):
            return out
    return [f"{label} #{i + 1}" for i, label in enumerate(labels(1))]  # not reached: the paths differ


def read_runs(dirs: list[str | Path]) -> list[Run]:
    """Every directory checked, in order: fewer than two, one given twice, or one that is not a complete
    run directory is one :class:`ReportError` naming it."""
    paths = [Path(d) for d in dirs]
    if len(paths) < 2:
        given = f" (got only {paths[0]})" if paths else ""
        raise ReportError(f"compare needs two or more run directories{given}")
    seen: dict[Path, str] = {}
    for given, p in zip(map(str, dirs), paths, strict=True):  # as typed: Path("./a") prints as "a"
        real = p.resolve()
        if real in seen:
            raise ReportError(f"{given}: given twice (also as {seen[real]}); compare each run once")
        seen[real] = given
    for p in paths:
        if p.is_dir() and not (p / "summary.json").exists():
            raise ReportError(f"{p}: not a run directory (no summary.json; python -m cosim run writes one)")
    files = [read_run_dir(p) for p in paths]
    labels = _labels([f.summary for f in files], paths)
    return [Run(label, p, f) for label, p, f in zip(labels, paths, files, strict=True)]


# ---------------------------------------------------------------------------------------------------
# Tables: each returns its HTML and the rows behind it
# ---------------------------------------------------------------------------------------------------


def _delta(a, b) -> tuple[float | None, float | None]:
    """``b - a`` and ``(b - a) / |a|`` of two numbers from summary.json; None where not defined."""
    if not (is_number(a) and is_number(b)) or not (math.isfinite(a) and math.isfinite(b)):
        return None, None
    diff = b - a
    return diff, (diff / abs(a) if a != 0 else None)


def _delta_text(fmt: str, diff: float | None, rel: float | None) -> str:
    """A difference as its row's numbers are shown: a fraction's in percentage points, else in the row's
    unit; then the relative difference."""
    if diff is None:
        return ""
    sign = "+" if diff > 0 else "−" if diff < 0 else "±"
    size = abs(diff)
    if "%" in fmt:
        text = f"{sign}{_esc(num(size * 100))} pp"
    else:
        text = sign + _fmt(fmt, int(size) if isinstance(diff, int) else size)
    if rel is not None and diff != 0:
        text += f" ({sign}{abs(rel):.1%})"
    return text


def headline(runs: list[Run]) -> tuple[str, pd.DataFrame]:
    """The run report's headline metrics, one column per run; the runs after the first with their
    difference from it."""
    ref = runs[0].summary
    head = "<th>metric</th>" + "".join(
        f"<th>{_esc(r.label)}</th>" + ("" if i == 0 else "<th>vs first</th>") for i, r in enumerate(runs)
    )
    body, data = [], []
    for key, label, fmt, doc in METRIC_ROWS:
        if not any(key in r.summary for r in runs):
            continue
        cells = []
        for i, r in enumerate(runs):
            value = r.summary.get(key)
            diff, rel = _delta(ref.get(key), value)
            cells.append(f"<td class=v>{_fmt(fmt, value)}</td>")
            if i:
                cells.append(f"<td class=dv>{_delta_text(fmt, diff, rel)}</td>")
            data.append(
                dict(
                    metric=key,
                    run=r.label,
                    value=json.dumps(value) if isinstance(value, list | dict) else value,
                    diff=diff,
                    rel_diff=rel,
                )
            )
        body.append(f"<tr><td title='{_esc(doc)}'>{_esc(label)}</td>{''.join(cells)}</tr>")
    return f"<table class=grid><tr>{head}</tr>{''.join(body)}</table>", pd.DataFrame(data)


def _flat(tree, prefix: str = "") -> dict[str, str]:
    """A resolved workload as ``dotted.key -> JSON text`` (lists stay one value, as ``--set`` takes them)."""
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(tree, sort_keys=True)}


def config_differences(runs: list[Run]) -> tuple[str, pd.DataFrame]:
    """The keys of config.resolved.yaml whose values differ between the runs (``-`` where a run lacks
    the key), in the file's order."""
    flats = [_flat(r.files.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    differ = [k for k in keys if len({f.get(k, "-") for f in flats}) > 1]
    data = pd.DataFrame(
        [{"key": k, **{r.label: f.get(k, "-") for r, f in zip(runs, flats, strict=True)}} for k in differ],
        columns=["key", *(r.label for r in runs)],
    )
    if not differ:
        return "<p>The resolved workloads are identical.</p>", data
    head = "<th>key</th>" + "".join(f"<th>{_esc(r.label)}</th>" for r in runs)
    body = "".join(
        "<tr><td><code>"
        + _esc(k)
        + "</code></td>"
        + "".join(f"<td>{_esc(f.get(k, '-'))}</td>" for f in flats)
        + "</tr>"
        for k in differ[:MAX_CONFIG_ROWS]
    )
    more = (
        f"<p class=meta>The first {MAX_CONFIG_ROWS} of {len(differ)} keys; all in config_differences.csv.</p>"
        if len(differ) > MAX_CONFIG_ROWS
        else ""
    )
    return f"<table class=grid><tr>{head}</tr>{body}</table>{more}", data


# ---------------------------------------------------------------------------------------------------
# Figures: each returns the figure and the rows behind it
# ---------------------------------------------------------------------------------------------------


def _phases(runs: list[Run]) -> list[str]:
    """The kinds of work in the runs' breakdowns, in the cost model's order (others after)."""
    keys = dict.fromkeys(k for r in runs for k in r.summary["breakdown_s"])
    return [p for p in PHASES if p in keys] + [k for k in keys if k not in PHASES]


def breakdown_figure(runs: list[Run]) -> tuple[go.Figure, pd.DataFrame]:
    labels = [_esc(r.label) for r in runs]
    data = pd.DataFrame(
        [
            dict(run=r.label, phase=p, seconds=r.summary["breakdown_s"].get(p, 0.0))
            for r in runs
            for p in _phases(runs)
        ]
    )
    fig = go.Figure()
    for phase in _phases(runs):
        values = [r.summary["breakdown_s"].get(phase, 0.0) for r in runs]
        if not any(values):
            continue
        fig.add_bar(
            name=_esc(phase),
            y=labels,
            x=values,
            orientation="h",
            marker_color=PHASE_COLORS.get(phase, "#888"),
            hovertemplate="%{y}<br>" + _esc(phase) + " %{x:.4g} s<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        title="Where the decode time goes (critical path, s)",
        height=140 + 40 * len(runs),
        xaxis_title="seconds",
        yaxis=dict(autorange="reversed", automargin=True),  # the first run on top, as in the table
        legend=dict(orientation="h", traceorder="normal"),
        margin=dict(l=20, r=20, t=50, b=40),
    )
    return fig, data


def _layer_seconds(layers: pd.DataFrame) -> pd.Series:
    """A layer's decode time: the sum of its kinds of work (layers.csv's ``total_s``, recomputed from
    the columns the report reader checked)."""
    cols = [f"{p}_s" for p in PHASES if f"{p}_s" in layers]
    return layers[cols].sum(axis=1)


def layers_figure(runs: list[Run]) -> tuple[go.Figure, pd.DataFrame]:
    fig, rows = go.Figure(), []
    for r in runs:
        layers = r.files.layers
        seconds = _layer_seconds(layers)
        fig.add_scatter(
            name=_esc(r.label),
            x=layers["layer"],
            y=seconds,
            mode="lines+markers",
            customdata=layers["replay_ratio"],
            hovertemplate="layer %{x}: %{y:.4g} s, replay %{customdata:.1%}<extra>"
            + _esc(r.label)
            + "</extra>",
        )
        rows += [
            dict(run=r.label, layer=int(lay), seconds=s, replay_ratio=rr)
            for lay, s, rr in zip(layers["layer"], seconds, layers["replay_ratio"], strict=True)
        ]
    n = max(len(r.files.layers) for r in runs)
    fig.update_layout(
        title="Decode time per layer (all kinds of work, s)",
        height=380,
        xaxis=dict(title="layer", dtick=max(1, math.ceil(n / 16))),  # whole layers only
        yaxis_title="seconds",
        legend=dict(orientation="h", y=-0.2),
        margin=dict(l=60, r=20, t=50, b=40),
    )
    return fig, pd.DataFrame(rows)


def energy_figure(runs: list[Run]) -> tuple[go.Figure, pd.DataFrame]:
    """Components on a log axis: static board power and memory traffic are orders of magnitude above
    the TAS unit's MACs. A component at 0 J has no bar (a log axis has no 0), and one at 0 J in every run
    no row; the CSV has them all."""
    parts = [r.summary.get("energy_breakdown_j") or {} for r in runs]
    everything = list(dict.fromkeys(k for p in parts for k in p))
    data = pd.DataFrame(
        [
            dict(run=r.label, component=c, joules=p.get(c))
            for r, p in zip(runs, parts, strict=True)
            for c in everything
        ]
    )
    components = [c for c in everything if any((p.get(c) or 0) > 0 for p in parts)]
    fig = go.Figure()
    for r, p in zip(runs, parts, strict=True):
        shown = [c for c in components if (p.get(c) or 0) > 0]
        fig.add_bar(
            name=_esc(r.label),
            y=[_esc(c) for c in shown],
            x=[p[c] for c in shown],
            orientation="h",
            hovertemplate="%{y}: %{x:.4g} J<extra>" + _esc(r.label) + "</extra>",
        )
    fig.update_layout(
        barmode="group",
        title="Energy by component (J, log scale)",
        xaxis=dict(title="joules", type="log"),
        yaxis=dict(
            automargin=True,
            autorange="reversed",
            categoryorder="array",
            categoryarray=[_esc(c) for c in components],
        ),
        height=140 + len(components) * (10 + 14 * len(runs)),
        legend=dict(orientation="h", y=-0.15),
        margin=dict(l=20, r=20, t=50, b=40),
    )
    return fig, data


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------


def _runs_table(runs: list[Run]) -> tuple[str, pd.DataFrame]:
    rows = [
        dict(
            label=r.label,
            directory=str(r.path),
            resolved=str(r.path.resolve()),
            workload=r.summary["workload"],
            model=r.summary["model"],
            hardware=r.summary["hardware"],
            policy=r.summary["policy"],
            drs=r.summary["drs"],
            mode=r.summary["mode"],
            seed=r.summary["seed"],
            trace=r.summary["trace_label"],
        )
        for r in runs
    ]
    cols = ["label", "directory", "model", "hardware", "mode", "seed", "trace"]
    head = "".join(f"<th>{c}</th>" for c in ["#", *cols])
    body = "".join(
        f"<tr><td>{i + 1}{' (reference)' if i == 0 else ''}</td>"
        + "".join(f"<td>{_esc(row[c])}</td>" for c in cols)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table class=grid><tr>{head}</tr>{body}</table>", pd.DataFrame(rows)


def write_comparison(runs: list[Run], out: Path) -> Path:
    """Write ``report.html``, ``report_data/*.csv``, ``compare.json`` and ``provenance.json`` into
    ``out`` (a staging directory from :func:`cosim.outdir.claim`); the page's path."""
    out = Path(out)
    runs_html, runs_data = _runs_table(runs)
    head_html, head_data = headline(runs)
    config_html, config_data = config_differences(runs)
    figures = [
        (*breakdown_figure(runs), "breakdown.csv", "Decode time by kind of work, one bar per run."),
        (
            *layers_figure(runs),
            "layers.csv",
            "Decode time per layer, one line per run; hover for the replay ratio.",
        ),
        (*energy_figure(runs), "energy.csv", "Energy by component, one bar per run; log axis."),
    ]
    tables = [("runs.csv", runs_data), ("headline.csv", head_data), ("config_differences.csv", config_data)]
    data = dict([*tables, *((name, frame) for _, frame, name, _ in figures)])

    def link(name: str) -> str:
        return f'Data: <a href="{DATA_DIR}/{quote(name)}">{_esc(name)}</a>'

    parts = [
        figure_block(fig, f"figure-{i}", f"Figure {i + 1}. {caption}", name)
        for i, (fig, _, name, caption) in enumerate(figures)
    ]
    fake = [r.label for r in runs if not r.summary.get("trace_is_real")]
    if len(fake) == len(runs):
        banner = (
            "<div class=warn>No run's replay decisions were captured from a model (trace column below).</div>"
        )
    elif fake:
        banner = (
            f"<div class=warn>Replay decisions not captured from a model in: {_esc(', '.join(fake))}.</div>"
        )
    else:
        banner = ""
    title = _esc(f"Comparison of {len(runs)} runs")
    page = f"""{page_head(title, COMPARE_CSS)}<h1>{title}</h1>
{banner}
<h2>Runs</h2>
<p class=meta>The first run, <b>{_esc(runs[0].label)}</b>, is the reference the others are compared with.
Labels: workload · policy · DRS · directory.</p>
{runs_html}
<h2>Headline</h2>
<p class=meta>Differences are from the first run: absolute (fractions in percentage points) and, in
parentheses, relative to the first run's value. Metric definitions: docs/metrics.md. {link("headline.csv")}</p>
{head_html}
<h2>What differs in the resolved workloads</h2>
<p class=meta>Keys of config.resolved.yaml whose values differ. {link("config_differences.csv")}</p>
{config_html}
{_plotlyjs()}{"".join(parts)}
<p class=meta>Built from the run directories alone (summary.json, layers.csv, config.resolved.yaml) by
<code>python -m cosim compare</code>. {link("runs.csv")}</p>
</body></html>
"""
    (out / "compare.json").write_text(
        dumps({"reference": runs[0].label, "runs": runs_data.to_dict(orient="records")})
    )
    (out / "provenance.json").write_text(dumps(provenance()))
    return write_page_and_data(out, page, data)
