"""The report of one run, built from its run directory alone (so it can be rebuilt years later).

One self-contained HTML page: plotly.js is embedded once, so the page opens offline. The run directory is
data, not trusted markup: every value read from it is HTML-escaped where it lands in the page, and the
JSON inside each figure's ``<script>`` cannot end the script (see :func:`script_json`). The numbers
behind each figure are written beside it (``report_data/<figure>.csv``); page and CSVs replace older ones
together, so a full disk never leaves a truncated report behind. ``run`` hands over the data it has just
written (no file read back, the trace not re-sorted); ``report DIR`` reads the files; both give the same
page. A figure the directory cannot give (analytic mode has no timeline; an older run has no cores.csv)
is a sentence saying why.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from accelerator.cost import PHASES
from cosim.fmt import num
from cosim.outdir import atomic_write_text, atomic_write_texts
from cosim.quality_keys import QUALITY_KEYS, quality_definition
from reports.inputs import ReportError, RunFiles, read_run_dir

__all__ = ["ReportError", "figure_html", "script_json", "write_run_report"]

DATA_DIR = "report_data"

PHASE_COLORS = dict(
    zip(PHASES, ["#4c78a8", "#72b7b2", "#f58518", "#e45756", "#54a24b", "#b279a2", "#9d755d"], strict=True)
)

METRIC_ROWS = [
    ("latency_s", "Decode latency", "{} s", "whole decode of the batch (all frames)"),
    ("dense_latency_s", "Dense latency", "{} s", "same workload, no replay, no TAS, no DRS"),
    ("speedup_vs_dense", "Speedup vs dense", "{:.3f}x", "dense latency / latency"),
    (
        "dense_full_attention_latency_s",
        "Dense latency, full attention",
        "{} s",
        "no replay, no sparse attention: the paper's headline baseline",
    ),
    (
        "speedup_vs_dense_full_attention",
        "Speedup vs dense, full attention",
        "{:.3f}x",
        "dense full-attention latency / latency (FastCar plus sparse attention)",
    ),
    (
        "drs_off_latency_s",
        "Latency without DRS",
        "{} s",
        "the same trace on the static batch-to-core mapping",
    ),
    ("drs_gain", "DRS gain", "{:.3f}x", "latency without DRS / latency"),
    ("replay_ratio", "Replay ratio", "{:.1%}", "replayed MLPs / (layers x decode steps x batch)"),
    ("tau", "Threshold tau", "{}", "replay when TAS >= tau (raw logit); one per layer if a list"),
    (
        "energy_j",
        "Energy",
        "{} J",
        "static power of each component x latency + dynamic MAC and memory energy",
    ),
    ("dense_energy_j", "Dense energy", "{} J", "the dense run's energy, same components"),
    ("avg_power_w", "Average power", "{:.3g} W", "energy / latency"),
    ("tokens_per_s", "Throughput", "{} tok/s", "batch rows x decode steps / latency"),
    ("tokens_per_j", "Efficiency", "{:.4g} tok/J", "batch rows x decode steps / energy"),
    ("core_utilization", "Core utilization", "{:.1%}", "compute-busy time / (cores x latency)"),
    (
        "core_imbalance",
        "Core imbalance",
        "{:.3f}",
        "busiest core's compute-busy time / mean over cores (1 = even)",
    ),
    ("drs_off_core_imbalance", "Core imbalance without DRS", "{:.3f}", "the same, static mapping"),
    (
        "memory_bandwidth_utilization",
        "Memory bandwidth utilization",
        "{:.1%}",
        "busiest group: bytes / (latency x peak)",
    ),
    ("drs_events", "DRS scheduling events", "{:d}", "one per layer per step from frame 1 on"),
]


#: Marks a JavaScript error on the page itself, where a reader (and the browser test) sees it.
ERROR_CATCHER = """<div id="js-errors" class="warn" hidden></div>
<script>(function () {
  function show(msg) {
    var e = document.getElementById("js-errors");
    e.hidden = false;
    e.textContent += "A figure failed to draw: " + msg + "\\n";
  }
  window.addEventListener("error", function (ev) { show(ev.message); });
  window.addEventListener("unhandledrejection", function (ev) { show(String(ev.reason)); });
})();</script>
"""


#: The style every report page shares (each adds its own few rules).
PAGE_CSS = """body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 8px 0 20px; }
td, th { padding: 3px 12px; border-bottom: 1px solid #eee; text-align: left; }
td.v { font-weight: 600; text-align: right; } td.d { color: #666; font-size: 0.9em; }
table.grid { font-size: 0.9em; } table.grid td, table.grid th { padding: 3px 10px; }
figure { margin: 0 0 16px; } figcaption { color: #555; font-size: 0.9em; } .meta { color: #555; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px 12px; overflow-x: auto; font-size: 0.85em; }
.warn { background: #fff4d6; border: 1px solid #e0b84c; padding: 8px 12px; margin: 8px 0; white-space: pre-wrap; }
"""


def page_head(title: str, css: str = "") -> str:
    """A report page up to its first heading: ``title`` (HTML-escaped already), the shared style plus
    ``css``, and :data:`ERROR_CATCHER`."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>\n'
        f"<style>\n{PAGE_CSS}{css}</style></head><body>\n{ERROR_CATCHER}"
    )


#: This page's rules beside :data:`PAGE_CSS`.
RUN_CSS = """body { max-width: 1200px; }
.real { background: #e8f5e9; border: 1px solid #7cb87f; padding: 8px 12px; margin: 8px 0; }
.absent { color: #555; font-style: italic; }
img#frames { image-rendering: pixelated; max-width: 100%; }
"""


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


def figure_block(fig: go.Figure, div_id: str, caption: str, csv_name: str) -> str:
    """A figure with its caption (HTML) and a link to its numbers, ``report_data/<csv_name>``."""
    href = f"{DATA_DIR}/{quote(csv_name)}"
    return (
        f"<figure>{figure_html(fig, div_id)}<figcaption>{caption} "
        f'Data: <a href="{href}">{_esc(csv_name)}</a></figcaption></figure>'
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


#: Legends sit above the plot area (never over the x-axis title); figures leave room for them.
LEGEND_ABOVE = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0)
#: Spans of timeline.json drawn in the Gantt at most (instruction granularity records one per instruction).
MAX_GANTT_SPANS = 4000
#: Decode steps of the timeline drawn in the Gantt at most (a few: each step is many layers).
GANTT_STEPS = 2
#: Columns of the core-utilisation heatmap at most (steps are binned beyond it).
MAX_UTIL_BINS = 160
UNIT_COLOR = "#bab0ac"


def run_label(summary: dict) -> str:
    """The replaying run's name in figures: not its bare policy name, which may be a kind of work ("tas")."""
    policy = str(summary["policy"])
    return f"{'FastCar' if policy == 'tas' else 'this run'} (policy {policy})"


def breakdown_figure(summary: dict) -> tuple[go.Figure, pd.DataFrame]:
    runs = [("dense", summary["dense_breakdown_s"]), (run_label(summary), summary["breakdown_s"])]
    fig = go.Figure()
    for phase in PHASES:
        fig.add_bar(
            name=phase,
            y=[_esc(name) for name, _ in runs],
            x=[b.get(phase, 0.0) for _, b in runs],
            orientation="h",
            marker_color=PHASE_COLORS[phase],
            hovertemplate="%{y}: " + phase + " %{x:.4g} s<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        title=dict(text="Where the decode time goes (critical path, s)", y=0.97),
        height=300,
        xaxis_title="seconds",
        legend=LEGEND_ABOVE,
        margin=dict(l=170, r=20, t=90, b=50),
    )
    data = pd.DataFrame([{"run": name, **{f"{p}_s": b.get(p, 0.0) for p in PHASES}} for name, b in runs])
    return fig, data


def energy_figure(summary: dict) -> tuple[go.Figure, pd.DataFrame]:
    """Energy by component, the run beside dense, on a log axis (the TAS unit's microjoules and the
    memory's joules both readable). A zero part has no bar on a log axis: its row says 0 in the CSV."""
    run = summary.get("energy_breakdown_j") or {}
    dense = summary.get("dense_energy_breakdown_j") or {}
    parts = list(dict.fromkeys([*dense, *run]))
    data = pd.DataFrame(
        {"component": parts, "dense_j": [dense.get(k) for k in parts], "run_j": [run.get(k) for k in parts]}
    )
    fig = go.Figure()
    for name, col, color in (("dense", "dense_j", "#bab0ac"), (_esc(run_label(summary)), "run_j", "#9d755d")):
        shown = data[data[col].fillna(0) > 0]
        if len(shown):
            fig.add_bar(
                name=name,
                x=shown[col],
                y=[_esc(k) for k in shown["component"]],
                orientation="h",
                marker_color=color,
                hovertemplate="%{y}: %{x:.4g} J<extra>" + name + "</extra>",
            )
    dense_total = f", dense {_fmt('{} J', summary['dense_energy_j'])}" if "dense_energy_j" in summary else ""
    fig.update_layout(
        barmode="group",
        title=dict(
            text=f"Energy by component (J, log scale), total {num(summary['energy_j'])} J{dense_total}"
        ),
        xaxis=dict(title="joules", type="log"),
        yaxis=dict(autorange="reversed"),
        height=150 + 34 * len(parts),
        legend=LEGEND_ABOVE,
        margin=dict(l=170, r=20, t=90, b=50),
    )
    return fig, data


def layers_figure(layers: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    fig = go.Figure()
    cols = [f"{p}_s" for p in PHASES if f"{p}_s" in layers]
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
        height=400,
        xaxis=dict(title="layer", dtick=1),
        yaxis_title="seconds",
        yaxis2=dict(
            title="replay ratio",
            overlaying="y",
            side="right",
            range=[0, 1],
            tickmode="array",
            tickvals=[0, 0.25, 0.5, 0.75, 1],
            tickformat=".0%",
            showgrid=False,
        ),
        legend=LEGEND_ABOVE,
        margin=dict(l=60, r=70, t=90, b=50),
    )
    return fig, layers[["layer", *cols, "replay_ratio"]]


def layers_vs_dense_figure(layers: pd.DataFrame, summary: dict) -> tuple[go.Figure, pd.DataFrame]:
    """Each layer's time over the decode, the run beside the dense run (layers.csv ``dense_total_s``)."""
    data = layers[["layer", "total_s", "dense_total_s"]]
    fig = go.Figure()
    fig.add_bar(name="dense", x=data["layer"], y=data["dense_total_s"], marker_color="#bab0ac")
    fig.add_bar(name=_esc(run_label(summary)), x=data["layer"], y=data["total_s"], marker_color="#4c78a8")
    fig.update_layout(
        barmode="group",
        title="Per layer: time over the decode, beside dense (s)",
        height=360,
        xaxis=dict(title="layer", dtick=1),
        yaxis_title="seconds",
        legend=LEGEND_ABOVE,
        margin=dict(l=60, r=20, t=90, b=50),
    )
    return fig, data


def core_columns(cores: pd.DataFrame) -> list[str]:
    """``core<i>_busy_s`` columns of cores.csv, in core order."""
    cols = [c for c in cores.columns if re.fullmatch(r"core\d+_busy_s", c)]
    return sorted(cols, key=lambda c: int(c[4:-7]))


def utilisation_bins(cores: pd.DataFrame, max_bins: int = MAX_UTIL_BINS) -> pd.DataFrame:
    """Busy fraction of each core per bin of consecutive decode steps (one step per bin when they are few):
    its compute-busy time in the bin / the bin's duration."""
    steps = len(cores)
    size = max(1, -(-steps // max_bins))
    groups = np.arange(steps) // size
    grouped = cores.groupby(groups, sort=True)
    out = pd.DataFrame(
        {
            "first_step": grouped["step"].min().to_numpy(),
            "last_step": grouped["step"].max().to_numpy(),
            "frame": grouped["frame"].min().to_numpy(),
            "start_s": grouped["start_s"].min().to_numpy(),
            "end_s": grouped["end_s"].max().to_numpy(),
        }
    )
    duration = (out["end_s"] - out["start_s"]).to_numpy()
    for col in core_columns(cores):
        busy = grouped[col].sum().to_numpy()
        out[col.replace("_busy_s", "_busy_fraction")] = np.divide(
            busy, duration, out=np.zeros_like(busy, dtype=float), where=duration > 0
        )
    return out


def _vline(x: float, color: str) -> dict:
    """A dotted vertical line over the whole plot height at ``x``."""
    return dict(
        type="line", x0=x, x1=x, yref="paper", y0=0, y1=1, line=dict(width=1, dash="dot", color=color)
    )


def cores_figure(cores: pd.DataFrame, tokens_per_frame: int) -> tuple[go.Figure, pd.DataFrame]:
    data = utilisation_bins(cores)
    cols = [c for c in data.columns if c.endswith("_busy_fraction")]
    names = [c.removesuffix("_busy_fraction") for c in cols]
    z = data[cols].to_numpy().T
    size = int(data["last_step"].iloc[0] - data["first_step"].iloc[0] + 1)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=data["first_step"],
            y=names,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar=dict(title="busy", tickformat=".0%"),
            customdata=np.repeat(data[["start_s", "end_s"]].to_numpy()[None], len(cols), axis=0),
            hovertemplate="%{y}, step %{x}: busy %{z:.1%}<br>%{customdata[0]:.4g} s to %{customdata[1]:.4g} s"
            "<extra></extra>",
        )
    )
    frames = int(cores["frame"].max()) + 1
    if 1 < frames <= 64:  # one list of shapes: add_vline re-validates every earlier shape each call
        fig.update_layout(shapes=[_vline(f * tokens_per_frame - size / 2, "white") for f in range(1, frames)])
    per = f"bins of {size} steps" if size > 1 else "per decode step"
    fig.update_layout(
        title=f"Core utilisation over the decode: compute-busy fraction per core, {per} (dotted: frames)",
        xaxis_title="decode step",
        yaxis=dict(title="core", autorange="reversed"),
        height=160 + 26 * len(cols),
        margin=dict(l=70, r=20, t=60, b=50),
    )
    return fig, data


def gantt_spans(timeline: dict | None) -> pd.DataFrame:
    """Complete spans of timeline.json on the cores and units tracks: track, kind of work, start and end (s)
    and the decode step where the spans carry one. Tracks are found by their process and thread names, so
    other tracks (memory, counters) and unknown events are left alone."""
    columns = ["track", "kind", "name", "start_s", "end_s", "step"]
    events = (timeline or {}).get("traceEvents") or []
    process, thread = {}, {}
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") != "M":
            continue
        name = (ev.get("args") or {}).get("name") if isinstance(ev.get("args"), dict) else None
        if ev.get("name") == "process_name":
            process[ev.get("pid")] = str(name)
        elif ev.get("name") == "thread_name":
            thread[(ev.get("pid"), ev.get("tid"))] = str(name)
    rows = []
    for ev in events:
        if (
            not isinstance(ev, dict)
            or ev.get("ph") != "X"
            or process.get(ev.get("pid")) not in ("cores", "units")
        ):
            continue
        ts, dur = ev.get("ts"), ev.get("dur")
        if not isinstance(ts, int | float) or not isinstance(dur, int | float):
            continue
        args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
        name = str(ev.get("name", ""))
        step = args.get("step")
        rows.append(
            (
                thread.get((ev.get("pid"), ev.get("tid")), f"track {ev.get('tid')}"),
                name.split("[")[0],
                name,
                ts * 1e-6,
                (ts + dur) * 1e-6,
                step if isinstance(step, int) else None,
            )
        )
    spans = pd.DataFrame(rows, columns=columns)
    if spans.empty:
        return spans
    spans = spans.sort_values(["start_s", "track"], kind="stable").reset_index(drop=True)
    if spans["step"].notna().any():
        first = sorted(spans["step"].dropna().unique())[:GANTT_STEPS]
        spans = spans[spans["step"].isin(first)]
    return spans.head(MAX_GANTT_SPANS).reset_index(drop=True)


def _track_order(track: str) -> tuple:
    m = re.fullmatch(r"core(\d+)", track)
    return (0, int(m.group(1)), "") if m else (1, 0, track)


def gantt_figure(spans: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    tracks = sorted(spans["track"].unique(), key=_track_order)
    fig = go.Figure()
    for kind in dict.fromkeys(spans["kind"]):
        rows = spans[spans["kind"] == kind]
        fig.add_bar(
            name=_esc(kind),
            y=[_esc(t) for t in rows["track"]],
            x=rows["end_s"] - rows["start_s"],
            base=rows["start_s"],
            orientation="h",
            marker_color=PHASE_COLORS.get(kind, UNIT_COLOR),
            customdata=[_esc(n) for n in rows["name"]],
            hovertemplate="%{y}: %{customdata} from %{base:.9g} s for %{x:.4g} s<extra></extra>",
        )
    steps = spans.dropna(subset=["step"]).groupby("step")["start_s"].min()
    for step, start in steps.items():
        fig.add_vline(x=start, line_width=1, line_dash="dot", line_color="#888")
        fig.add_annotation(
            x=start,
            y=1,
            yref="paper",
            text=f"step {int(step)}",
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
        )
    fig.update_layout(
        barmode="overlay",
        title=dict(text="Per-core schedule of the first recorded decode steps (timeline.json)", y=0.98),
        xaxis_title="time (s, from the start of the decode)",
        yaxis=dict(categoryorder="array", categoryarray=[_esc(t) for t in tracks], autorange="reversed"),
        height=200 + 30 * len(tracks),
        legend=dict(LEGEND_ABOVE, y=1.08),
        margin=dict(l=100, r=20, t=110, b=50),
    )
    return fig, spans


def drs_figure(summary: dict) -> tuple[go.Figure, pd.DataFrame]:
    """Per-core compute-busy time with DRS (this run) and without (the same trace, static mapping)."""
    on, off = summary["core_busy_s"], summary["drs_off_core_busy_s"]
    data = pd.DataFrame({"core": range(len(on)), "drs_on_busy_s": on, "drs_off_busy_s": off})
    names = [f"core{c}" for c in data["core"]]
    fig = go.Figure()
    fig.add_bar(name="DRS off (static mapping)", x=names, y=data["drs_off_busy_s"], marker_color="#bab0ac")
    fig.add_bar(name="DRS on (this run)", x=names, y=data["drs_on_busy_s"], marker_color="#f58518")
    imbalance = (_fmt("{:.3f}", summary.get(k)) for k in ("core_imbalance", "drs_off_core_imbalance"))
    fig.update_layout(
        barmode="group",
        title=(
            f"What DRS bought: latency {_fmt('{} s', summary.get('latency_s'))} vs "
            f"{_fmt('{} s', summary.get('drs_off_latency_s'))} without "
            f"({_fmt('{:.3f}x', summary.get('drs_gain'))}); core imbalance {' vs '.join(imbalance)}"
        ),
        xaxis_title="core",
        yaxis_title="compute-busy seconds",
        height=360,
        legend=LEGEND_ABOVE,
        margin=dict(l=60, r=20, t=90, b=50),
    )
    return fig, data


def tas_figure(
    tas: np.ndarray, replay: np.ndarray, tau: float | list[float] | None
) -> tuple[go.Figure, pd.DataFrame]:
    """Histogram of every scored TAS (frames 1 and later), replayed and computed, on 80 shared bins."""
    tas, replay = tas.ravel(), replay.ravel()
    ok = ~np.isnan(tas)
    scored, decided = tas[ok], replay[ok]
    edges = np.histogram_bin_edges(scored, bins=80) if scored.size else np.linspace(0, 1, 81)
    data = pd.DataFrame(
        {
            "tas_from": edges[:-1],
            "tas_to": edges[1:],
            "replayed": np.histogram(scored[decided], edges)[0],
            "computed": np.histogram(scored[~decided], edges)[0],
        }
    )
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for col, color in (("replayed", "#54a24b"), ("computed", "#4c78a8")):
        fig.add_bar(
            x=centers,
            y=data[col],
            width=width,
            name=col,
            marker_color=color,
            opacity=0.75,
            hovertemplate="TAS %{x:.3g}: %{y} " + col + "<extra></extra>",
        )
    if isinstance(tau, int | float) and np.isfinite(tau):  # one tau (a per-layer list gets no line)
        fig.add_vline(x=tau, line_dash="dash", annotation_text=f"tau = {tau:.3g}")
    fig.update_layout(
        barmode="overlay",
        bargap=0,
        title="TAS distribution (frames 1 and later)",
        xaxis_title="TAS (logit)",
        yaxis_title="decisions",
        height=340,
        legend=LEGEND_ABOVE,
        margin=dict(l=60, r=20, t=90, b=50),
    )
    return fig, data


def replay_map_figure(replay: np.ndarray, tokens_per_frame: int) -> tuple[go.Figure, pd.DataFrame]:
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
            colorbar=dict(title="replay", tickformat=".0%"),
        )
    )
    fig.update_layout(
        title="Replay ratio by layer and frame",
        xaxis=dict(title="frame", dtick=1 if frames <= 40 else None),
        yaxis=dict(title="layer", dtick=1 if layers <= 40 else None),
        height=360,
        margin=dict(l=60, r=20, t=50, b=50),
    )
    layer, frame = np.meshgrid(np.arange(layers), np.arange(frames), indexing="ij")
    data = pd.DataFrame({"layer": layer.ravel(), "frame": frame.ravel(), "replay_ratio": grid.ravel()})
    return fig, data


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


def quality_table(quality: dict) -> str:
    """summary["quality"] with each key's unit and definition (:mod:`cosim.quality_keys`), in that module's
    order; a metric measured at several seeds shows its mean and sample std beside the headline seed's."""
    spread = {k for k in quality if quality_definition(k) and k not in QUALITY_KEYS}  # <metric>_mean/_std
    keys = [k for k in QUALITY_KEYS if k in quality]
    keys += [k.rsplit("_", 1)[0] for k in spread if k.rsplit("_", 1)[0] not in keys]  # a spread alone
    keys += [k for k in quality if k not in keys and k not in spread]  # unknown keys, as they come
    has_spread = bool(spread)
    rows = []
    for k in dict.fromkeys(keys):
        unit, doc = quality_definition(k) or ("", "not defined in this version (docs/metrics.md)")
        v = quality.get(k)
        value = _fmt("{}", v) if isinstance(v, int | float | list) and not isinstance(v, bool) else _esc(v)
        cell = ""
        if has_spread:
            mean, std = quality.get(f"{k}_mean"), quality.get(f"{k}_std")
            cell = (
                f"<td class=v>{_fmt('{}', mean)} &plusmn; {_fmt('{:.2g}', std)}</td>"
                if mean is not None
                else "<td></td>"
            )
        rows.append(
            f"<tr><td>{_esc(k)}</td><td class=v>{value}</td>{cell}<td>{_esc(unit)}</td><td class=d>{_esc(doc)}</td></tr>"
        )
    seeds = quality.get("quality_seeds")
    head = (
        f"<th>value (seed {_esc(quality.get('seed'))})</th><th>mean &plusmn; std over {_esc(seeds)} seeds</th>"
        if has_spread
        else "<th>value</th>"
    )
    return f"<table id=quality><tr><th>key</th>{head}<th>unit</th><th>definition</th></tr>{''.join(rows)}</table>"


def sparse_html(config: dict) -> str:
    """The sparse-attention settings, when the run uses them."""
    sa = config.get("sparse_attention") or {}
    if not isinstance(sa, dict) or sa.get("window") is None:
        return ""
    return (
        f"<p class=meta id=sparse>Sparse attention: each token attends to the first {_esc(sa.get('sink_tokens'))} "
        f"(sink) tokens and the last {_esc(sa.get('window'))} tokens; the speedup against the dense run "
        "compares against dense with the same sparse attention, the full-attention speedup against dense "
        "with full attention.</p>"
    )


@dataclass
class Section:
    """One figure of the page with its heading, caption and CSV name; or, where the run directory cannot
    give the figure, the sentence that says why (``fig`` None, ``caption`` the reason)."""

    heading: str
    caption: str
    fig: go.Figure | None = None
    data: pd.DataFrame | None = None
    name: str = ""


def _section(heading: str, name: str, caption: str, made: tuple[go.Figure, pd.DataFrame]) -> Section:
    return Section(heading, caption, made[0], made[1], name)


def _sections(files: RunFiles) -> list[Section]:
    summary, layers, trace = files.summary, files.layers, files.trace
    out = [
        _section(
            "Where the time goes",
            "breakdown",
            "Critical-path time by kind of work, this run and dense.",
            breakdown_figure(summary),
        ),
        _section(
            "Energy beside dense",
            "energy",
            "Energy by component, log scale; a part that is 0 has no bar.",
            energy_figure(summary),
        ),
        _section(
            "Per layer",
            "layers",
            "Time by kind of work per layer (summed over the decode) and its replay ratio.",
            layers_figure(layers),
        ),
    ]
    heading = "Per layer beside dense"
    if "dense_total_s" in layers:
        out.append(
            _section(
                heading,
                "layers_vs_dense",
                "Each layer's time over the decode, this run beside dense.",
                layers_vs_dense_figure(layers, summary),
            )
        )
    else:
        out.append(
            Section(heading, "layers.csv has no dense_total_s column (a run written by an older version).")
        )
    heading = "Cores over time"
    if files.cores is not None:
        caption = (
            "Each core's compute-busy time / the elapsed time, per decode step (or bin of steps), over the whole "
            "decode; cores.csv has every step."
        )
        out.append(
            _section(
                heading,
                "core_utilisation",
                caption,
                cores_figure(files.cores, int(summary["tokens_per_frame"])),
            )
        )
    else:
        out.append(
            Section(
                heading,
                "No cores.csv: this run was written by a version that did not record per-step core busy time.",
            )
        )
    heading, spans = "Per-core schedule", gantt_spans(files.timeline)
    if len(spans):
        caption = (
            "The cores' and units' spans of the first recorded decode steps of timeline.json (default: from the "
            "first step of frame 1, where TAS, DRS and replay run)."
        )
        out.append(_section(heading, "gantt", caption, gantt_figure(spans)))
    else:
        out.append(
            Section(
                heading, "timeline.json holds no core spans (analytic mode, or outputs.timeline_steps = 0)."
            )
        )
    heading = "What DRS bought"
    if all(summary.get(k) is not None for k in ("core_busy_s", "drs_off_core_busy_s", "drs_off_latency_s")):
        caption = "Per-core compute-busy time with DRS and, on the same trace, with the static batch-to-core mapping."
        out.append(_section(heading, "drs", caption, drs_figure(summary)))
    elif summary["drs"] and summary["policy"] != "dense":
        out.append(
            Section(
                heading,
                "No DRS-off comparison in summary.json: outputs.drs_comparison was false, or a version before it wrote the run.",
            )
        )
    if summary["policy"] != "dense":
        tas, replay = trace.tas_cube(), trace.replay_cube()
        out.append(
            _section(
                "TAS",
                "tas_histogram",
                "Every scored TAS, replayed and computed.",
                tas_figure(tas, replay, summary.get("tau")),
            )
        )
        out.append(
            _section(
                "Replay map",
                "replay_map",
                "Replay ratio by layer and frame.",
                replay_map_figure(replay, trace.meta.tokens_per_frame),
            )
        )
    return out


def write_page_and_data(
    out: Path, page: str, data: dict[str, pd.DataFrame], float_format: str | None = None
) -> Path:
    """``out/report.html`` and the numbers behind its figures, ``out/report_data/<figure>.csv``, replaced
    together (a full disk or a crash leaves the old ones whole, never a stub); a CSV of a figure the page
    no longer has is removed afterwards."""
    data_dir = out / DATA_DIR
    data_dir.mkdir(exist_ok=True)
    files = {
        data_dir / name: table.to_csv(index=False, float_format=float_format) for name, table in data.items()
    }
    atomic_write_texts({**files, out / "report.html": page})
    for stale in data_dir.glob("*.csv"):
        if stale.name not in data:
            stale.unlink()
    return out / "report.html"


def write_run_report(run_dir: Path, files: RunFiles | None = None, plotlyjs_src: str | None = None) -> Path:
    """(Re)build ``report.html`` and ``report_data/*.csv`` of a run directory; ``plotlyjs_src``: reference
    that copy of plotly.js (see :func:`_plotlyjs`) instead of embedding it.

    ``files``: the run's data as its files hold them, handed over by the writer of the directory so that
    nothing is read back; without it every file is read and checked, and an incomplete or corrupt run
    directory raises :class:`ReportError` (bad input) naming the file and the reason, before anything is
    written (the old report, if any, stays as it was). Both give the same page.
    """
    run_dir = Path(run_dir)
    if files is None:
        files = read_run_dir(run_dir)
    summary, config = files.summary, files.config

    sections = _sections(files)
    data = {f"{sec.name}.csv": sec.data for sec in sections if sec.fig is not None}
    parts = [_plotlyjs(plotlyjs_src)]
    for i, sec in enumerate(sections):
        parts.append(f"<h2>{_esc(sec.heading)}</h2>")
        if sec.fig is None:
            parts.append(f"<p class=absent>{_esc(sec.caption)}</p>")
            continue
        parts.append(figure_block(sec.fig, f"figure-{i}", _esc(sec.caption), f"{sec.name}.csv"))

    rows = "".join(
        f"<tr><td>{label}</td><td class=v>{_fmt(fmt, summary.get(key))}</td><td class=d>{doc}</td></tr>"
        for key, label, fmt, doc in METRIC_ROWS
        if key in summary
    )
    quality = summary.get("quality") or {}
    res = summary.get("resources_estimate")
    resources = (
        f"<p class=meta>Accelerator logic: {res['luts']:,.0f} LUT, {res['ffs']:,.0f} FF, {res['dsps']:,.0f} DSP, "
        f"{res['brams']:,.0f} BRAM36 ({_esc(res['label'])}); "
        f"{'fits the board' if summary['fits_board'] else '<b>does not fit the board</b>'}.</p>"
        if res
        else ""
    )
    frames = (
        "<h2>Decoded frames of prompt 0</h2><p class=meta>Top row: the dense decode; bottom row: the replaying "
        "decode (frames.png), frame 0 on the left.</p>"
        f'<img id=frames alt="decoded frames, dense above replayed" src="data:image/png;base64,'
        f'{base64.b64encode(files.frames_png).decode("ascii")}">'
        if files.frames_png
        else ""
    )
    banner_class = "real" if summary.get("trace_is_real") else "warn"
    banner = f"<div class='{banner_class}'>Replay decisions: {_esc(summary['trace_label'])}</div>"
    hw = config["hardware"]
    title = _esc(f"{summary['workload']}: {summary['model']} on {summary['hardware']}")
    events = f"{files.timeline_events:,} trace events; " if files.timeline_events else ""
    config_block = (
        "<h2>Resolved configuration</h2><details><summary>config.resolved.yaml (the exact inputs, presets "
        f"expanded)</summary><pre id=config>{_esc(files.config_text)}</pre></details>"
        if files.config_text
        else ""
    )
    page = f"""{page_head(title, RUN_CSS)}<h1>{title}</h1>
{banner}
<p class=meta>policy <b>{_esc(summary["policy"])}</b>, DRS <b>{"on" if summary["drs"] else "off"}</b>,
mode <b>{_esc(summary["mode"])}</b>, batch {_esc(summary["batch"])} x {_esc(summary["frames"])} frames x
{_esc(summary["tokens_per_frame"])} tokens, {_esc(hw["cores"])} cores x {_esc(hw["lanes_per_core"])} lanes at
{_esc(hw["clock_MHz"])} MHz, seed {_esc(summary["seed"])}. Metric definitions: docs/metrics.md.</p>
{sparse_html(config)}
<h2>Headline</h2><table id=headline>{rows}</table>
{resources}
{"<h2>Quality against the dense generation</h2>" + quality_table(quality) if quality else ""}
{frames}
{"".join(parts)}
{config_block}
{provenance_html(files.provenance)}
<p class=meta>Built from this run directory alone (summary.json, layers.csv, cores.csv, trace.parquet,
timeline.json, config.resolved.yaml, provenance.json); the numbers behind each figure are in {DATA_DIR}/.
timeline.json ({events}Chrome/Perfetto format) opens in ui.perfetto.dev or chrome://tracing.</p>
</body></html>
"""
    return write_page_and_data(run_dir, page, data, float_format="%.9g")
