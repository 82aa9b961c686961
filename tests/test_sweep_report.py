"""The sweep report (reports/sweep_report.py) of real tiny sweeps (analytic mode): self-contained, every
figure's CSV saying what results.csv and pareto.csv say, and every figure drawn by a real browser."""

import itertools
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from offline_page import page_without_plotlyjs
from plotly.offline import get_plotlyjs
from tiny_workload import TINY

import cosim.sweep_exec
from cosim.errors import InputError
from cosim.sweep import load_sweep, prepare, run_sweep, write_outputs
from reports.browser import chromium, rendered_dom
from reports.sweep_report import ReportError, write_sweep_report

OBJECTIVES = ["latency_s", "energy_j", "luts"]
PARAMS = ["hardware.cores", "policy.kind", "scheduler.drs", "policy.target_replay_ratio"]
#: An error message that would be markup if not escaped.
BOOM = "<script>alert('boom')</script> & <b>bold</b>"


def run_tiny_sweep(tmp: Path, fails=lambda point: False, **over) -> Path:
    """A sweep run in this process (so ``fails`` can make chosen points fail); its directory."""
    (tmp / "base.yaml").write_text(yaml.safe_dump(TINY))
    spec = {
        "version": 1,
        "name": "tiny",
        "base": "base.yaml",
        "fixed": {"simulation.mode": "analytic"},
        "parameters": {
            "hardware.cores": [1, 2],
            "policy.kind": ["tas", "fixed_interval"],
            "scheduler.drs": [True, False],
            "policy.target_replay_ratio": [0.25, 0.75],
        },
        "objectives": {"latency_s": "min", "energy_j": "min", "luts": "min"},
        "constraints": {"replay_ratio": {"max": 0.6}},
        **over,
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep, text = load_sweep(tmp / "sweep.yaml")
    out = tmp / "out"
    prepare(sweep, text, out, resume=False, force=False)
    evaluate = cosim.sweep_exec.evaluate

    def failing(base, overrides, metrics):
        if fails(overrides):
            raise InputError(BOOM)
        return evaluate(base, overrides, metrics)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cosim.sweep_exec, "evaluate", failing)
        rows = run_sweep(sweep, out, jobs=1)["rows"]  # one job: the points run in this process
    write_outputs(sweep, rows, out)
    return out


def text_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """16 points, 3 objectives, a string and a boolean parameter; the 0.75 replay targets violate the
    constraint; one point fails; two front points have run directories."""
    out = run_tiny_sweep(
        tmp_path_factory.mktemp("sweep"),
        fails=lambda p: p["hardware.cores"] == 2 and p["policy.kind"] == "tas" and not p["scheduler.drs"],
    )
    front = text_csv(out / "pareto.csv")["key"].tolist()
    assert len(front) >= 2
    (out / "runs" / front[0]).mkdir(parents=True)
    (out / "runs" / front[0] / "report.html").write_text("<html></html>")
    (out / "runs" / front[1]).mkdir(parents=True)
    write_sweep_report(out)
    return out


@pytest.fixture(scope="module")
def results(sweep_dir) -> pd.DataFrame:
    return text_csv(sweep_dir / "results.csv")


@pytest.fixture(scope="module")
def page(sweep_dir) -> str:
    return (sweep_dir / "report.html").read_text()


def test_the_sweep_has_what_the_report_must_handle(results):
    assert len(results) == 16
    assert (results["status"] == "error").sum() == 2
    done = results[results["status"] == "done"]
    assert set(done["constraints_met"]) == {"True", "False"}  # some points greyed, some not
    assert set(results["policy.kind"]) == {"tas", "fixed_interval"}


def test_plotlyjs_is_embedded_once_and_nothing_is_fetched(page):
    page_without_plotlyjs(page)


def test_header_counts_what_results_csv_says(page, results, sweep_dir):
    done = results[results["status"] == "done"]
    meets = done[done["constraints_met"] == "True"]
    front = text_csv(sweep_dir / "pareto.csv")
    assert (
        f"<b>16</b> points: <b>{len(done)}</b> done, <b>2</b> failed,\n<b>{len(meets)}</b> meet the "
        f"constraints, <b>{len(front)}</b> on the Pareto front." in page
    )
    assert "Objectives: min latency_s (s), min energy_j (J), min luts (count)." in page
    assert "replay_ratio &le; 0.6" in page
    assert "<title>Sweep tiny</title>" in page


def test_pareto_figures_have_the_rows_of_results_csv(sweep_dir, page, results):
    done = results[results["status"] == "done"].set_index("key")
    front = set(text_csv(sweep_dir / "pareto.csv")["key"])
    for a, b in itertools.combinations(OBJECTIVES, 2):
        data = text_csv(sweep_dir / "report_data" / f"pareto_{a}_vs_{b}.csv")
        assert sorted(data["key"]) == sorted(done.index)  # every finished point, once
        cols = [*PARAMS, a, b, "constraints_met"]
        assert data.set_index("key")[cols].sort_index().equals(done[cols].sort_index())
        assert set(data.loc[data["on_front"] == "True", "key"]) == front
        assert f"Pareto front: {a} vs {b}" in page
    assert page.count('class="plotly-graph-div"') == 3 + 1  # three pairs and the parallel coordinates
    for m, unit in {"latency_s": "s", "energy_j": "J", "luts": "count"}.items():  # units on the axes
        assert page.count(f'"title":{{"text":"{m} ({unit}), lower is better"}}') == 2  # in 2 of 3 pairs


def test_every_csv_is_linked_from_the_page(sweep_dir, page):
    files = {p.name for p in (sweep_dir / "report_data").iterdir()}
    assert files == {f"pareto_{a}_vs_{b}.csv" for a, b in itertools.combinations(OBJECTIVES, 2)} | {
        "parallel.csv",
        "best.csv",
    }
    assert set(re.findall(r'href="report_data/([^"]+)"', page)) == files


def test_parallel_coordinates_code_strings_and_booleans(sweep_dir, page, results):
    data = text_csv(sweep_dir / "report_data" / "parallel.csv").set_index("key")
    done = results[results["status"] == "done"].set_index("key")
    cols = [*PARAMS, *OBJECTIVES, "constraints_met"]
    assert data[cols].sort_index().equals(done[cols].sort_index())
    kinds = sorted(set(done["policy.kind"]))  # codes follow the sorted levels, which are the tick text
    assert list(data["policy.kind (code)"]) == [str(kinds.index(v)) for v in data["policy.kind"]]
    assert list(data["scheduler.drs (code)"]) == [str(int(v == "True")) for v in data["scheduler.drs"]]
    assert '"ticktext":["fixed_interval","tas"]' in page and '"ticktext":["False","True"]' in page
    assert '"type":"parcoords"' in page


def test_best_table_is_the_front_best_first_with_run_links(sweep_dir, page, results):
    front = text_csv(sweep_dir / "pareto.csv")
    best = text_csv(sweep_dir / "report_data" / "best.csv")
    want = front.assign(v=front["latency_s"].astype(float)).sort_values(["v", "key"])["key"].tolist()
    assert best["key"].tolist() == want
    table = page[page.index("<h2>Best configurations</h2>") :]
    assert re.findall(r"<tr><td>\d+</td><td><code>([0-9a-f]+)</code>", table) == want
    k0, k1 = front["key"][0], front["key"][1]
    links = dict(zip(best["key"], best["run"], strict=True))
    assert links[k0] == f"runs/{k0}/report.html" and links[k1] == f"runs/{k1}/"
    assert all(v == "" for k, v in links.items() if k not in (k0, k1))
    assert f'href="runs/{k0}/report.html"' in table and f'href="runs/{k1}/"' in table
    assert best.set_index("key")[PARAMS].equals(results.set_index("key").loc[want, PARAMS])


def test_failed_points_are_listed_with_their_escaped_errors(page, results):
    failed = results[results["status"] == "error"]
    section = page[page.index("<h2>Failed points</h2>") :]
    assert all(f"<code>{k}</code>" in section for k in failed["key"])
    assert section.count("&lt;script&gt;alert(&#x27;boom&#x27;)&lt;/script&gt; &amp; &lt;b&gt;") == 2
    assert BOOM not in page


def test_one_objective_is_shown_against_each_parameter_and_confirm_runs_are_not_plotted(tmp_path):
    confirm = {"simulation.mode": "event"}  # the best point(s) re-run in the event model
    out = run_tiny_sweep(tmp_path, objectives={"latency_s": "min"}, constraints={}, confirm=confirm)
    write_sweep_report(out)
    page = (out / "report.html").read_text()
    files = {p.name for p in (out / "report_data").iterdir()}
    assert files == {f"objective_latency_s_vs_{p}.csv" for p in PARAMS} | {"parallel.csv", "best.csv"}
    assert page.count('class="plotly-graph-div"') == len(PARAMS) + 1
    front = text_csv(out / "pareto.csv")
    results = text_csv(out / "results.csv")
    screen = results[results["stage"] == "screen"]
    n_confirm = (results["stage"] == "confirm").sum()
    assert n_confirm == len(front) > 0
    assert f"<b>{len(screen)}</b> points" in page and f"{n_confirm} runs, 0 failed" in page
    for p in PARAMS:
        data = text_csv(out / "report_data" / f"objective_latency_s_vs_{p}.csv")
        assert sorted(data["key"]) == sorted(screen["key"])  # screening points only
        assert set(data.loc[data["best"] == "True", "key"]) == set(front["key"])
    assert text_csv(out / "report_data" / "best.csv")["key"].tolist() == sorted(front["key"])  # ties


def test_five_objectives_give_six_pairs_and_a_maximised_one_sorts_the_best_first(tmp_path):
    objectives = {"tokens_per_s": "max", "energy_j": "min", "luts": "min", "ffs": "min", "dsps": "min"}
    out = run_tiny_sweep(tmp_path, objectives=objectives, parameters={"hardware.cores": [1, 2, 3]})
    page = write_sweep_report(out).read_text()
    pairs = list(itertools.combinations(objectives, 2))[:6]
    files = {p.name for p in (out / "report_data").iterdir()}
    assert files == {f"pareto_{a}_vs_{b}.csv" for a, b in pairs} | {"parallel.csv", "best.csv"}
    assert "The first 6 of 10 are shown." in page
    assert "Objectives: max tokens_per_s (tok/s), min energy_j (J)" in page
    assert "tokens_per_s (tok\\u002fs), higher is better" in page  # an axis title (JSON escapes /)
    best = text_csv(out / "report_data" / "best.csv")
    speeds = best["tokens_per_s"].astype(float).tolist()
    assert speeds == sorted(speeds, reverse=True) and len(speeds) == len(text_csv(out / "pareto.csv"))


def test_a_sweep_where_every_point_failed_gets_a_page_saying_so(tmp_path):
    out = run_tiny_sweep(tmp_path, fails=lambda p: True)
    page = (write_sweep_report(out)).read_text()
    assert "No point finished" in page
    assert get_plotlyjs()[:100] not in page  # nothing to draw: no 4 MB library either
    assert page.count("<tr><td><code>") == 16  # every failed point listed
    assert {p.name for p in (out / "report_data").iterdir()} == {"best.csv"}


def test_a_missing_file_is_one_report_error(tmp_path):
    out = run_tiny_sweep(tmp_path, parameters={"hardware.cores": [1, 2]})
    (out / "pareto.csv").unlink()
    with pytest.raises(ReportError, match="pareto.csv: missing"):
        write_sweep_report(out)
    assert not (out / "report.html").exists()


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_every_figure_renders_offline_in_chromium(sweep_dir, results):
    dom = rendered_dom(sweep_dir / "report.html")
    body = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the page as drawn, not its code
    assert re.search(r'<div id="js-errors"[^>]*hidden[^>]*></div>', body), "a script failed"
    assert "WebGL is not supported" not in body
    figures = re.split(r'(?=<div id="figure-\d+")', body)[1:]
    assert len(figures) == 4
    done = (results["status"] == "done").sum()
    for fig in figures[:3]:  # the pairs: plotly drew the plot and one marker per finished point
        assert fig.startswith('<div id="figure-') and "js-plotly-plot" in fig[:120]
        assert fig.count('class="main-svg"') >= 2
        assert fig.count('class="point"') == done
    assert "js-plotly-plot" in figures[3][:120] and figures[3].count("<canvas") >= 1  # parcoords (WebGL)
    assert "fixed_interval" in figures[3]  # its tick text drawn


@pytest.fixture(scope="module")
def sweep_with_front(tmp_path_factory) -> Path:
    """``python -m cosim sweep --write-front`` over two core counts with run reports on: the sweep report
    and every front run's report share one plotly.min.js."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("front")
    (tmp / "base.yaml").write_text(yaml.safe_dump(dict(TINY, outputs={"report": True, "timeline_steps": 1})))
    spec = {
        "version": 1,
        "name": "front",
        "base": "base.yaml",
        "fixed": {"simulation.mode": "analytic"},
        "parameters": {"hardware.cores": [1, 2, 4]},
        "objectives": {"latency_s": "min", "luts": "min"},
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "sweep", "sweep.yaml", "--out", "out", "--write-front"],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert r.returncode == 0, r.stderr
    return tmp / "out"


def test_a_sweep_and_its_front_runs_share_one_plotlyjs(sweep_with_front):
    from cosim.outdir import owned_by_tool

    out = sweep_with_front
    assert (out / "plotly.min.js").read_text() == get_plotlyjs()
    runs = sorted((out / "runs").glob("*/report.html"))
    assert len(runs) == len(text_csv(out / "pareto.csv")) >= 2
    for page, src in [(out / "report.html", "plotly.min.js")] + [(p, "../../plotly.min.js") for p in runs]:
        html = page.read_text()
        assert get_plotlyjs()[:200] not in html and "plotly.js v" not in html  # not embedded...
        assert re.findall(r'<script[^>]*\ssrc="([^"]*)"', html) == [src]  # ...but referenced, relatively
        assert (page.parent / src).resolve() == (out / "plotly.min.js").resolve()
        assert page.stat().st_size < 1_000_000
    assert owned_by_tool(out, "sweep")  # the shared file is one the sweep writes


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_a_front_run_report_draws_its_figures_from_the_shared_file(sweep_with_front):
    page = sorted((sweep_with_front / "runs").glob("*/report.html"))[0]
    dom = rendered_dom(page)
    figures = page.read_text().count('class="plotly-graph-div"')
    assert figures >= 5  # breakdown, energy, per layer, TAS, replay map at least
    drawn = re.split(r'(?=<div id="figure-\d+")', dom)[1:]
    assert len(drawn) == figures
    for fig in drawn:
        assert "js-plotly-plot" in fig[:120] and fig.count('class="main-svg"') >= 2
