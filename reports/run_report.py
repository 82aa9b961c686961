"""The report of one run, built from its run directory alone (so it can be rebuilt years later).

One self-contained HTML page: plotly.js is embedded once, so the page opens offline. The run directory is
data, not trusted markup: every value read from it is HTML-escaped where it lands in the page, and the
JSON inside each figure's ``<script>`` cannot end the script (see :func:`script_json`). The page
replaces an older report atomically, so a full disk never leaves a truncated report behind.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from accelerator.cost import PHASES
from cosim.fmt import num
from cosim.outdir import atomic_write_text
from reports.inputs import ReportError, read_run_dir

__all__ = ["ReportError", "figure_html", "script_json", "write_run_report"]

PHASE_COLORS = dict(
    zip(PHASES, ["#4c78a8", "#72b7b2", "#f58518", "#e45756", "#54a24b", "#b279a2", "#9d755d"], strict=True)
)

METRIC_ROWS = [
    ("latency_s", "Decode latency", "{} s", "whole decode of the batch (all frames)"),
    ("dense_latency_s", "Dense latency", "{} s", "same workload, no replay, no TAS, no DRS"),
    ("speedup_vs_dense", "Speedup vs dense", "{:.3f}x", "dense latency / latency"),
    ("replay_ratio", "Replay ratio", "{:.1%}", "replayed MLPs / (layers x decode steps x batch)"),
    ("tau", "Threshold tau", "{}", "replay when TAS >= tau (raw logit); one per layer if a list"),
    (
        "energy_j",
        "Energy",
        "{} J",
        "static power of each component x latency + dynamic MAC and memory energy",
    ),
    ("avg_power_w", "Average power", "{:.3g} W", "energy / latency"),
    ("tokens_per_s", "Throughput", "{} tok/s", "batch rows x decode steps / latency"),
    ("tokens_per_j", "Efficiency", "{:.4g} tok/J", "batch rows x decode steps / energy"),
    ("core_utilization", "Core utilization", "{:.1%}", "compute-busy time / (cores x latency)"),
    (
        "memory_bandwidth_utilization",
        "Memory bandwidth utilization",
        "{:.1%}",
        "busiest group: bytes / (latency x peak)",
    ),
    ("drs_events", "DRS scheduling events", "{:d}", "one per layer per step from frame 1 on"),
]


def _esc(value) -> str:
    """Any value from a file, as HTML text."""
    return html.escape(str(value), quote=True)


def _fmt(fmt: str, value) -> str:
    """A value from summary.json formatted for a table cell: always HTML-escaped, whatever its type."""
    if value is None:
        return "n/a"
    try:
        if isinstance(value, list):  # e.g. one tau per layer
            text = ", ".join(num(v) for v in value)
        elif fmt.startswith("{}") and isinstance(value, int | float) and not isinstance(value, bool):
            text = fmt.format(num(value))
        else:
            text = fmt.format(value)
    except (ValueError, TypeError, AttributeError):
        text = str(value)
    return _esc(text)


#: What JSON inside a ``<script>`` element must not contain literally (``</script``, ``<!--``, ``]]>``, and
#: the two line separators JavaScript string literals reject); the escapes read back as the same text.
_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(text: str) -> str:
    """A JSON document made safe to sit inside ``<script>...</script>`` as a JavaScript literal."""
    return text.translate(_SCRIPT_ESCAPES)


def figure_html(fig: go.Figure, div_id: str) -> str:
    """One figure: a div and the script that draws it (plotly.js is embedded once, see :func:`_plotlyjs`).

    The figure's JSON may hold strings from the run directory; :func:`script_json` keeps it from ending
    the script, whatever the plotting library's own escaping does."""
    spec = script_json(pio.to_json(fig, validate=False, remove_uids=True))
    height = fig.layout.height or 450
    return (
        f'<div id="{div_id}" class="plotly-graph-div" style="height:{int(height)}px; width:100%;"></div>\n'
        f"<script>(function () {{ var fig = {spec}; "
        f'Plotly.newPlot("{div_id}", fig.data, fig.layout, {{"displaylogo": false, "responsive": true}}); '
        "})();</script>\n"
    )


def _plotlyjs(src: str | None = None) -> str:
    """plotly.js, embedded once (as ``include_plotlyjs=True`` would), so the page opens offline; or, with
    ``src``, a relative address of the copy :func:`write_plotlyjs` wrote, so that the pages of one
    directory (a sweep and its front runs) share one 4.8 MB file and still open offline."""
    lib = f'<script src="{_esc(src)}"></script>' if src else f"<script>{get_plotlyjs()}</script>"
    return f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n{lib}\n"


PLOTLYJS_FILE = "plotly.min.js"


def write_plotlyjs(directory: Path) -> Path:
    """``directory/plotly.min.js``, the installed plotly's bundle, for pages written with ``_plotlyjs(src)``;
    left alone when it already holds that bundle, replaced atomically otherwise."""
    path, bundle = Path(directory) / PLOTLYJS_FILE, get_plotlyjs()
    if not (path.is_file() and path.read_text(encoding="utf-8", errors="replace") == bundle):
        atomic_write_text(path, bundle)
    return path


def breakdown_figure(summary: dict) -> go.Figure:
    fig = go.Figure()
    runs = [("dense", summary["dense_breakdown_s"]), (_esc(summary["policy"]), summary["breakdown_s"])]
    for phase in PHASES:
        fig.add_bar(
            name=phase,
            y=[name for name, _ in runs],
            x=[b.get(phase, 0.0) for _, b in runs],
            orientation="h",
            marker_color=PHASE_COLORS[phase],
            hovertemplate="%{y}: " + phase + " %{x:.4g} s<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        title="Where the decode time goes (critical path, s)",
        height=280,
        xaxis_title="seconds",
        legend_orientation="h",
        margin=dict(l=80, r=20, t=50, b=40),
    )
    return fig


def energy_figure(summary: dict) -> go.Figure:
    parts = {_esc(k): v for k, v in (summary.get("energy_breakdown_j") or {}).items() if v > 0}
    fig = go.Figure(
        go.Bar(
            x=list(parts.values()),
            y=list(parts.keys()),
            orientation="h",
            marker_color="#9d755d",
            hovertemplate="%{y}: %{x:.4g} J<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Energy by component (J), total {num(summary['energy_j'])} J",
        xaxis_title="joules",
        height=120 + 28 * len(parts),
        margin=dict(l=170, r=20, t=50, b=40),
    )
    return fig


def layers_figure(layers: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for phase in PHASES:
        col = f"{phase}_s"
        if col in layers and layers[col].any():
            fig.add_bar(name=phase, x=layers["layer"], y=layers[col], marker_color=PHASE_COLORS[phase])
    fig.add_scatter(
        name="replay ratio",
        x=layers["layer"],
        y=layers["replay_ratio"],
        yaxis="y2",
        mode="lines+markers",
        line_color="black",
    )
    fig.update_layout(
        barmode="stack",
        title="Per layer: time by kind of work and replay ratio",
        height=380,
        xaxis_title="layer",
        yaxis_title="seconds",
        yaxis2=dict(title="replay ratio", overlaying="y", side="right", range=[0, 1]),
        legend_orientation="h",
        margin=dict(l=60, r=60, t=50, b=40),
    )
    return fig


def tas_figure(tas: np.ndarray, replay: np.ndarray, tau: float | list[float] | None) -> go.Figure:
    rng = np.random.default_rng(0)
    tas, replay = tas.ravel(), replay.ravel()
    ok = ~np.isnan(tas)
    idx = np.flatnonzero(ok)
    if idx.size > 200_000:  # a histogram does not need every point; keep the page small
        idx = np.sort(rng.choice(idx, 200_000, replace=False))
    fig = go.Figure()
    fig.add_histogram(
        x=tas[idx][replay[idx]], name="replayed", marker_color="#54a24b", opacity=0.75, nbinsx=80
    )
    fig.add_histogram(
        x=tas[idx][~replay[idx]], name="computed", marker_color="#4c78a8", opacity=0.75, nbinsx=80
    )
    if isinstance(tau, int | float) and np.isfinite(tau):  # one tau (a per-layer list gets no line)
        fig.add_vline(x=tau, line_dash="dash", annotation_text=f"tau = {tau:.3g}")
    fig.update_layout(
        barmode="overlay",
        title="TAS distribution (frames 1 and later)",
        xaxis_title="TAS (logit)",
        yaxis_title="decisions",
        height=320,
        margin=dict(l=60, r=20, t=50, b=40),
    )
    return fig


def replay_map_figure(replay: np.ndarray, tokens_per_frame: int) -> go.Figure:
    b, layers, steps = replay.shape
    frames = steps // tokens_per_frame
    grid = replay.reshape(b, layers, frames, tokens_per_frame).mean(axis=(0, 3))
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(frames)),
            y=list(range(layers)),
            colorscale="Greens",
            zmin=0,
            zmax=1,
            colorbar_title="replay",
        )
    )
    fig.update_layout(
        title="Replay ratio by layer and frame",
        xaxis_title="frame",
        yaxis_title="layer",
        height=360,
        margin=dict(l=60, r=20, t=50, b=40),
    )
    return fig


def provenance_html(prov: dict | None) -> str:
    """What produced the run (provenance.json), as one paragraph."""
    if not prov:
        return (
            "<p class=meta>No provenance.json: the run was written by a version that did not record one.</p>"
        )
    commit = prov.get("git_commit")
    where = (
        f", git {_esc(str(commit)[:12])}{' with local changes' if prov.get('git_dirty') else ''}"
        if commit
        else ""
    )
    libs = ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in (prov.get("libraries") or {}).items() if v)
    m = prov.get("machine") or {}
    return (
        f"<h2>Provenance</h2><p class=meta id=provenance>{_esc(prov.get('tool'))} {_esc(prov.get('version'))}"
        f"{where}; command <code>{_esc(prov.get('command'))}</code> in {_esc(prov.get('cwd'))}; "
        f"Python {_esc(prov.get('python'))}; {libs}; {_esc(m.get('platform'))}, {_esc(m.get('cpus'))} CPUs, "
        f"{_esc(m.get('memory_GiB'))} GiB; written {_esc(prov.get('created_utc'))}.</p>"
    )


def write_run_report(run_dir: Path, plotlyjs_src: str | None = None) -> Path:
    """(Re)build ``report.html`` from the run directory's files alone; ``plotlyjs_src``: reference that
    copy of plotly.js (see :func:`_plotlyjs`) instead of embedding it.

    An incomplete or corrupt run directory raises :class:`ReportError` (bad input) naming the file and
    the reason, before anything is written; the old report, if any, stays as it was.
    """
    run_dir = Path(run_dir)
    files = read_run_dir(run_dir)
    summary, layers, config, trace = files.summary, files.layers, files.config, files.trace
    tas, replay = trace.tas_cube(), trace.replay_cube()

    figures = [breakdown_figure(summary), energy_figure(summary), layers_figure(layers)]
    if summary["policy"] != "dense":
        figures += [
            tas_figure(tas, replay, summary.get("tau")),
            replay_map_figure(replay, trace.meta.tokens_per_frame),
        ]
    parts = [_plotlyjs(plotlyjs_src)] + [figure_html(f, f"figure-{i}") for i, f in enumerate(figures)]

    rows = "".join(
        f"<tr><td>{label}</td><td class=v>{_fmt(fmt, summary.get(key))}</td><td class=d>{doc}</td></tr>"
        for key, label, fmt, doc in METRIC_ROWS
        if key in summary
    )
    quality = summary.get("quality") or {}
    qrows = "".join(
        f"<tr><td>{_esc(k)}</td><td class=v>{_fmt('{:.4g}', v)}</td><td></td></tr>"
        for k, v in quality.items()
    )
    res = summary.get("resources_estimate")
    resources = (
        f"<p class=meta>Accelerator logic: {res['luts']:,.0f} LUT, {res['ffs']:,.0f} FF, {res['dsps']:,.0f} DSP, "
        f"{res['brams']:,.0f} BRAM36 ({_esc(res['label'])}); "
        f"{'fits the board' if summary['fits_board'] else '<b>does not fit the board</b>'}.</p>"
        if res
        else ""
    )
    banner_class = "real" if summary.get("trace_is_real") else "warn"
    banner = f"<div class='{banner_class}'>Replay decisions: {_esc(summary['trace_label'])}</div>"
    hw = config["hardware"]
    title = _esc(f"{summary['workload']}: {summary['model']} on {summary['hardware']}")
    events = f"{files.timeline_events:,} trace events; " if files.timeline_events else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }} td {{ padding: 3px 12px; border-bottom: 1px solid #eee; }}
td.v {{ font-weight: 600; text-align: right; }} td.d {{ color: #666; font-size: 0.9em; }}
.warn {{ background: #fff4d6; border: 1px solid #e0b84c; padding: 8px 12px; margin: 8px 0; }}
.real {{ background: #e8f5e9; border: 1px solid #7cb87f; padding: 8px 12px; margin: 8px 0; }}
.meta {{ color: #555; }}
</style></head><body>
<h1>{title}</h1>
{banner}
<p class=meta>policy <b>{_esc(summary["policy"])}</b>, DRS <b>{"on" if summary["drs"] else "off"}</b>,
mode <b>{_esc(summary["mode"])}</b>, batch {_esc(summary["batch"])} x {_esc(summary["frames"])} frames x
{_esc(summary["tokens_per_frame"])} tokens, {_esc(hw["cores"])} cores x {_esc(hw["lanes_per_core"])} lanes at
{_esc(hw["clock_MHz"])} MHz, seed {_esc(summary["seed"])}. Metric definitions: docs/metrics.md.</p>
<h2>Headline</h2><table>{rows}</table>
{resources}
{"<h2>Quality against the dense generation</h2><table>" + qrows + "</table>" if qrows else ""}
{"".join(parts)}
{provenance_html(files.provenance)}
<p class=meta>Built from this run directory alone (summary.json, layers.csv, trace.parquet,
config.resolved.yaml, provenance.json). timeline.json ({events}Chrome/Perfetto format) opens in ui.perfetto.dev or
chrome://tracing.</p>
</body></html>
"""
    out = run_dir / "report.html"
    atomic_write_text(out, page)  # a full disk or a crash leaves the old report whole, never a stub
    return out
