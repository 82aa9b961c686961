"""``python -m cosim compare``: two tiny runs (DRS on and off) side by side; the differences checked
against their summary.json files, the refusals leave nothing behind, and the page draws in Chromium."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from offline_page import page_without_plotlyjs
from tiny_workload import TINY

import cosim
from cosim.fmt import num
from cosim.outdir import MARKER, marker_kind
from reports.browser import chromium, rendered_dom, screenshot

ON, OFF = "tiny · tas · DRS on · on", "tiny · tas · DRS off · off"


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosim", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``on`` and ``off``: the tiny workload with DRS on and off (event mode), as ``run`` writes them."""
    root = tmp_path_factory.mktemp("runs")
    for name, drs in (("on", True), ("off", False)):
        cosim.run(cosim.load(TINY, {"scheduler.drs": drs})).write(root / name)
    return root


@pytest.fixture(scope="module")
def compared(runs) -> Path:
    r = cli("compare", "on", "off", cwd=runs)
    assert r.returncode == 0, r.stderr
    out = runs / "runs" / "compare" / "on--off"
    assert (
        r.stdout.strip()
        == f"2 runs compared, the first as reference -> {Path('runs/compare/on--off/report.html')}"
    )
    return out


def summary(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "summary.json").read_text())


def test_the_default_output_holds_the_page_its_data_and_a_marker(compared):
    assert marker_kind(compared) == "compare"
    assert listing(compared) == sorted(
        [MARKER, "compare.json", "provenance.json", "report.html", "report_data"]
        + [
            f"report_data/{n}.csv"
            for n in ("runs", "headline", "config_differences", "breakdown", "layers", "energy")
        ]
    )
    page = (compared / "report.html").read_text()
    rest = page_without_plotlyjs(page)  # embedded once, nothing fetched
    assert rest.count('class="plotly-graph-div"') == 3
    assert ON in rest and OFF in rest
    data = json.loads((compared / "compare.json").read_text())
    assert data["reference"] == ON and [r["directory"] for r in data["runs"]] == ["on", "off"]


def test_headline_differences_are_the_summaries_differences(runs, compared):
    a, b = summary(runs, "on"), summary(runs, "off")
    assert b["latency_s"] > a["latency_s"] and b["drs_events"] == 0 < a["drs_events"]  # DRS matters here
    head = pd.read_csv(compared / "report_data" / "headline.csv")
    rows = head[head["run"] == OFF].set_index("metric")
    for key in ("latency_s", "energy_j", "speedup_vs_dense", "tokens_per_s", "core_utilization"):
        assert rows.loc[key, "value"] == pytest.approx(b[key], rel=1e-15)
        assert rows.loc[key, "diff"] == pytest.approx(b[key] - a[key], rel=1e-12)
        assert rows.loc[key, "rel_diff"] == pytest.approx((b[key] - a[key]) / abs(a[key]), rel=1e-12)
    ref = head[head["run"] == ON]
    assert (ref["diff"].dropna() == 0).all() and len(ref) == len(rows)
    page = (compared / "report.html").read_text()
    d = b["latency_s"] - a["latency_s"]
    assert f"+{num(d)} s (+{d / a['latency_s']:.1%})" in page
    du = (b["core_utilization"] - a["core_utilization"]) * 100  # a fraction's difference in points
    assert f"−{num(-du)} pp" in page
    assert f"−{a['drs_events']} (−100.0%)" in page


def test_workload_differences_and_figure_data(runs, compared):
    config = pd.read_csv(compared / "report_data" / "config_differences.csv", dtype=str)
    assert config.to_dict(orient="records") == [{"key": "scheduler.drs", ON: "true", OFF: "false"}]
    breakdown = pd.read_csv(compared / "report_data" / "breakdown.csv")
    energy = pd.read_csv(compared / "report_data" / "energy.csv")
    layers = pd.read_csv(compared / "report_data" / "layers.csv")
    for name, label in (("on", ON), ("off", OFF)):
        s = summary(runs, name)
        mine = breakdown[breakdown["run"] == label].set_index("phase")["seconds"]
        assert mine.to_dict() == pytest.approx(s["breakdown_s"], rel=1e-15)
        assert mine.sum() == pytest.approx(s["latency_s"], rel=1e-9)
        mine = energy[energy["run"] == label].set_index("component")["joules"]
        assert mine.to_dict() == pytest.approx(s["energy_breakdown_j"], rel=1e-15)
        run_layers = pd.read_csv(runs / name / "layers.csv")
        mine = layers[layers["run"] == label]
        assert mine["layer"].tolist() == run_layers["layer"].tolist()
        assert np.allclose(mine["seconds"], run_layers["total_s"], rtol=1e-8)
        assert np.array_equal(mine["replay_ratio"], run_layers["replay_ratio"])


def test_a_second_comparison_replaces_the_first_and_labels_stay_unique(runs, tmp_path):
    for parent in ("x", "y"):
        shutil.copytree(runs / "on", tmp_path / parent / "run")
    out = tmp_path / "cmp"
    for _ in range(2):
        r = cli("compare", "x/run", "y/run", "--out", "cmp", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert "(replaced an earlier compare output)" in r.stdout
    labels = pd.read_csv(out / "report_data" / "runs.csv")["label"].tolist()
    assert labels == ["tiny · tas · DRS on · x/run", "tiny · tas · DRS on · y/run"]
    config = pd.read_csv(out / "report_data" / "config_differences.csv")
    assert config.empty and "The resolved workloads are identical." in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["on"], "compare needs two or more run directories (got only on)"),
        (["on", "nothing"], "nothing: not a directory"),
        (["on", "plain"], "plain: not a run directory (no summary.json"),
        (["on", "./on"], "./on: given twice (also as on)"),
        (["on", "broken"], "layers.csv: missing (incomplete run directory)"),
        (["on", "off", "--out", "mine"], "mine: refusing to replace this directory: it holds keep.txt"),
        (["on", "off", "--out", "off"], "off: inside the run directory off"),
        (["on", "off", "--out", "on/cmp"], "on/cmp: inside the run directory on"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(runs, tmp_path, args, message):
    for name in ("on", "off"):
        shutil.copytree(runs / name, tmp_path / name)
    shutil.copytree(runs / "on", tmp_path / "broken")
    (tmp_path / "broken" / "layers.csv").unlink()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("keep")
    before = listing(tmp_path)
    r = cli("compare", *args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert listing(tmp_path) == before


def test_help_imports_no_heavy_library(tmp_path):
    code = (
        "import sys\nfrom cosim.cli import build_parser\n"
        "try:\n    build_parser().parse_args(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'torch', 'plotly') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "RUN_DIR" in r.stdout and "runs/compare/A--B" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_every_figure_renders_offline_in_chromium(runs, compared, tmp_path):
    dom = rendered_dom(compared / "report.html")
    body = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the page as drawn, not its code
    assert re.search(r'<div id="js-errors"[^>]*hidden[^>]*></div>', body), "a script failed"
    figures = re.split(r'(?=<div id="figure-\d+")', body)[1:]
    assert len(figures) == 3
    for fig in figures:
        assert "js-plotly-plot" in fig[:120] and fig.count('class="main-svg"') >= 2
    phases = sum(
        any(summary(runs, n)["breakdown_s"][p] for n in ("on", "off"))
        for p in summary(runs, "on")["breakdown_s"]
    )
    assert figures[0].count('class="point"') == 2 * phases  # one bar per run and kind of work
    n_layers = len(pd.read_csv(runs / "on" / "layers.csv"))
    assert len(re.findall(r'class="point[ "]', figures[1])) == 2 * n_layers  # one marker per run and layer
    bars = sum(v > 0 for n in ("on", "off") for v in summary(runs, n)["energy_breakdown_j"].values())
    assert figures[2].count('class="point"') == bars  # the log axis drew every positive component
    png = screenshot(compared / "report.html", tmp_path / "page.png")
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 200).mean() > 0.02, "the screenshot is blank"


def test_values_from_the_run_directories_are_text_not_markup(runs, tmp_path):
    """A hand-edited summary.json and a directory name with markup in them land escaped in the page."""
    evil = "<img src=x onerror=alert(1)>"
    shutil.copytree(runs / "on", tmp_path / "on")
    shutil.copytree(runs / "off", tmp_path / "<b>off</b>")
    path = tmp_path / "on" / "summary.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, workload=evil, energy_breakdown_j={evil: 1.0})))
    r = cli("compare", "on", "<b>off</b>", "--out", "cmp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rest = page_without_plotlyjs((tmp_path / "cmp" / "report.html").read_text())
    assert evil not in rest and "<b>off</b>" not in rest
    assert "&lt;img src=x onerror=alert(1)&gt;" in rest and "&lt;b&gt;off&lt;/b&gt;" in rest
    runs_csv = pd.read_csv(tmp_path / "cmp" / "report_data" / "runs.csv")
    assert runs_csv["workload"].tolist() == [evil, "tiny"]  # the data say what the files say
