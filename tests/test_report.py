"""The run report: self-contained, every figure drawn in a real browser with no network, the numbers behind
each figure beside it, and the same page whether built from the run in memory or from its directory."""

import re
import shutil

import numpy as np
import pandas as pd
import pytest
from tiny_workload import run_tiny_with_report

from reports.browser import chromium, rendered_dom, screenshot
from reports.inputs import read_run_dir
from reports.run_report import DATA_DIR, gantt_spans, write_run_report

#: Figures of the tiny run's report: breakdown, energy, per layer, per layer beside dense, cores over
#: time, per-core schedule, DRS on vs off, TAS histogram, replay map.
FIGURES = 9


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_tiny_with_report(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(run_dir):
    return run_dir / "report.html"


def test_self_contained(report):
    page = report.read_text()
    assert page.count("plotly.js v") >= 1  # the library is embedded...
    assert not re.search(r"<script[^>]+src=", page)  # ...and nothing is fetched
    assert "synthetic (generated, not captured from a model)" in page


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_every_figure_renders_offline_in_chromium(report, tmp_path):
    dom = rendered_dom(report)
    assert report.read_text().count('class="plotly-graph-div"') == FIGURES
    body = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the page as drawn, not its code
    assert re.search(r'<div id="js-errors"[^>]*hidden[^>]*></div>', body), "a script failed"
    figures = re.split(r'(?=<div id="figure-\d+")', body)[1:]
    assert len(figures) == FIGURES
    for fig in figures:
        assert "js-plotly-plot" in fig[:200] and fig.count('class="main-svg"') >= 2, fig[:200]
    assert "Decode latency" in dom and "DRS gain" in dom
    png = screenshot(report, tmp_path / "page.png")
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 200).mean() > 0.02, "the screenshot is blank"


def test_every_figure_has_its_csv(run_dir):
    page = (run_dir / "report.html").read_text()
    linked = re.findall(rf'href="{DATA_DIR}/([^"]+\.csv)"', page)
    assert len(linked) == FIGURES
    assert sorted(p.name for p in (run_dir / DATA_DIR).iterdir()) == sorted(linked)
    drs = pd.read_csv(run_dir / DATA_DIR / "drs.csv")
    assert list(drs.columns) == ["core", "drs_on_busy_s", "drs_off_busy_s"] and len(drs) == 2


def test_in_memory_and_rebuilt_pages_are_the_same(run_dir, tmp_path):
    """`run` builds the page from the results in memory; `report DIR` from the files alone: same bytes."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / DATA_DIR)
    (copy / "report.html").unlink()
    write_run_report(copy)
    assert (copy / "report.html").read_bytes() == (run_dir / "report.html").read_bytes()
    for csv in (run_dir / DATA_DIR).iterdir():
        assert (copy / DATA_DIR / csv.name).read_bytes() == csv.read_bytes(), csv.name


def test_stale_figure_csv_is_removed(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / DATA_DIR / "gone.csv").write_text("a\n1\n")
    write_run_report(copy)
    assert not (copy / DATA_DIR / "gone.csv").exists()


def test_gantt_spans_lie_in_the_timeline_window(run_dir):
    """Every core's spans in the Gantt lie between the start and the end of the recorded decode steps."""
    files = read_run_dir(run_dir)
    spans = gantt_spans(files.timeline)
    cores = files.cores
    first = files.summary["tokens_per_frame"]  # the default window starts at frame 1
    assert set(spans["step"]) == {first}  # run_tiny_with_report records one step
    t0, t1 = cores.loc[first, "start_s"], cores.loc[first, "end_s"]
    assert t1 > t0
    for core in ("core0", "core1"):
        mine = spans[spans["track"] == core]
        assert len(mine) >= 3  # qkv, attention and mlp at least
        assert (mine["start_s"] >= t0 - 1e-12).all() and (mine["end_s"] <= t1 + 1e-12).all()
    # the span times came from the file: their busy time adds up to what cores.csv says for the step
    busy = spans[spans["track"] == "core0"].eval("end_s - start_s").sum()
    assert busy == pytest.approx(cores.loc[first, "core0_busy_s"], rel=1e-6)


def test_gantt_reads_tracks_by_name_and_ignores_other_events(monkeypatch):
    timeline = {
        "traceEvents": [
            {"name": "process_name", "ph": "M", "pid": 7, "args": {"name": "cores"}},
            {"name": "thread_name", "ph": "M", "pid": 7, "tid": 3, "args": {"name": "core0"}},
            {"name": "process_name", "ph": "M", "pid": 9, "args": {"name": "memory"}},
            {"name": "mlp", "ph": "X", "pid": 7, "tid": 3, "ts": 10.0, "dur": 5.0, "args": {"step": 4}},
            {"name": "mlp", "ph": "X", "pid": 7, "tid": 3, "ts": 99.0, "dur": 5.0, "args": {"step": 9}},
            {"name": "ddr4", "ph": "X", "pid": 9, "tid": 1, "ts": 10.0, "dur": 5.0},
            {"name": "bandwidth", "ph": "C", "pid": 9, "ts": 10.0, "args": {"GBps": 3}},
            {"name": "qkv[0]", "ph": "X", "pid": 7, "tid": 3, "ts": 1.0, "dur": "bad"},
        ]
    }
    spans = gantt_spans(timeline)
    assert list(spans["track"]) == ["core0", "core0"] and list(spans["kind"]) == ["mlp", "mlp"]
    monkeypatch.setattr("reports.run_report.GANTT_STEPS", 1)  # the first steps only
    assert list(gantt_spans(timeline)["step"]) == [4]
    assert gantt_spans(None).empty and gantt_spans({"traceEvents": []}).empty


def test_what_a_run_cannot_draw_is_said(tmp_path):
    """Analytic mode has no timeline, a workload may skip the DRS comparison, an older run has no
    cores.csv: each missing figure is a sentence saying why, and the rest still draws."""
    from tiny_workload import TINY

    from cosim.api import load, run

    w = load(TINY, {"simulation.mode": "analytic", "outputs.drs_comparison": False, "outputs.report": True})
    out = run(w).write(tmp_path / "run")
    page = (out / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') == FIGURES - 2
    assert "timeline.json holds no core spans (analytic mode" in page
    assert "No DRS-off comparison in summary.json: outputs.drs_comparison was false" in page
    assert (out / "cores.csv").is_file()  # the analytic model keeps per-step core busy time too
    (out / "cores.csv").unlink()
    page = write_run_report(out).read_text()
    assert "No cores.csv" in page and page.count('class="plotly-graph-div"') == FIGURES - 3
    assert not (out / DATA_DIR / "core_utilisation.csv").exists()  # no figure, no CSV


def test_layout_legends_above_clean_ratio_ticks_and_run_labels(run_dir):
    from reports.run_report import _sections

    sections = [s for s in _sections(read_run_dir(run_dir)) if s.fig is not None]
    for sec in sections:
        legend = sec.fig.layout.legend
        if len(sec.fig.data) > 1 and sec.name not in ("core_utilisation", "replay_map"):
            assert legend.orientation == "h" and legend.y >= 1, sec.name  # never over the x-axis title
    layers = next(s for s in sections if s.name == "layers").fig.layout.yaxis2
    assert list(layers.tickvals) == [0, 0.25, 0.5, 0.75, 1] and layers.tickformat == ".0%"
    breakdown = next(s for s in sections if s.name == "breakdown")
    assert list(breakdown.data["run"]) == ["dense", "FastCar (policy tas)"]  # not "tas", a kind of work
    assert set(breakdown.fig.data[0].y) == {"dense", "FastCar (policy tas)"}
    energy = next(s for s in sections if s.name == "energy").fig
    assert energy.layout.xaxis.type == "log" and [t.name for t in energy.data] == [
        "dense",
        "FastCar (policy tas)",
    ]
