"""The calibration report (reports/calibration_report.py) of a real tiny calibration: self-contained, every
value from the directory escaped, every figure's CSV saying what the directory's files say, the sections
of an empty leave-one-out or profile file replaced by a sentence, and every figure drawn by a browser."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from offline_page import page_without_plotlyjs
from tiny_workload import TINY

import cosim
from cosim.outdir import foreign_entries, owned_by_tool
from reports.browser import chromium, rendered_dom, screenshot
from reports.calibration_report import MAX_NEAR, ReportError, write_calibration_report

#: A row name and a calibration name that would be markup if not escaped.
HOSTILE = "<script>x</script> & <b>r50</b>"
NAME = 'tiny <i>cal</i> & "co"'
#: The ground truth the rows are simulated at; two free parameters keep the fit to a few seconds.
TRUTH = {"hardware.clock_MHz": 150.0, "hardware.cores": 2}
ROWS = {
    "dense": {"policy.kind": "dense"},
    "r25": {"policy.target_replay_ratio": 0.25},
    HOSTILE: {"policy.target_replay_ratio": 0.5},
    "r75": {"policy.target_replay_ratio": 0.75},
}
FREE = {"hardware.clock_MHz": {"bounds": [50, 400]}, "hardware.cores": {"choices": [1, 2]}}


def cosim_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosim", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def calibrate(tmp: Path, *flags: str) -> Path:
    """Rows measured on the simulator at TRUTH with a seeded 0.5% noise, fitted by the CLI; the directory."""
    (tmp / "base.yaml").write_text(yaml.safe_dump(TINY))
    rng = np.random.default_rng(0)
    rows = {}
    for name, o in ROWS.items():
        s = cosim.run(cosim.load(TINY, {**TRUTH, **o, "simulation.mode": "analytic"})).summary
        measured = {
            m: float(s[m] * (1 + 0.005 * rng.standard_normal())) for m in ("latency_s", "tokens_per_j")
        }
        rows[name] = {"overrides": o, "measured": measured}
    spec = {
        "version": 1,
        "name": NAME,
        "base": "base.yaml",
        "fixed": {"simulation.mode": "analytic"},
        "rows": rows,
        "parameters": FREE,
    }
    (tmp / "calib.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    r = cosim_cli("calibrate", "calib.yaml", "--out", "cal", "--quiet", *flags, cwd=tmp)
    assert r.returncode == 0, r.stderr
    return tmp / "cal"


def text_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def cal_dir(tmp_path_factory) -> Path:
    out = calibrate(tmp_path_factory.mktemp("calibration"), "--profile-points", "3")
    write_calibration_report(out)
    return out


@pytest.fixture(scope="module")
def page(cal_dir) -> str:
    return (cal_dir / "report.html").read_text()


@pytest.fixture(scope="module")
def fit(cal_dir) -> dict:
    return json.loads((cal_dir / "fit.json").read_text())


@pytest.fixture
def copy(cal_dir, tmp_path) -> Path:
    """A copy of the calibration directory without its report, to edit."""
    d = tmp_path / "cal"
    shutil.copytree(cal_dir, d, ignore=shutil.ignore_patterns("report.html", "report_data"))
    return d


def pct(x: float, signed: bool = False) -> str:
    return f"{100 * x:+.3g}%" if signed else f"{100 * x:.3g}%"


def test_the_calibration_has_what_the_report_must_handle(cal_dir, fit):
    assert fit["best"]["hardware.cores"] == 2 and fit["loo_max_abs_rel_error"] is not None
    assert set(text_csv(cal_dir / "residuals.csv")["row"]) == set(ROWS)
    assert set(text_csv(cal_dir / "profiles.csv")["parameter"]) == set(FREE)
    assert len(text_csv(cal_dir / "near_equivalent.csv")) == fit["near_equivalent"]["count"] > 1


def test_plotlyjs_is_embedded_once_and_nothing_is_fetched(page):
    rest = page_without_plotlyjs(page)
    assert rest.count('class="plotly-graph-div"') == 4  # residuals, leave-one-out, profiles, near set


def test_headline_says_what_fit_json_says(page, fit):
    head = page[page.index("<h2>Headline</h2>") : page.index("<h2>Residuals</h2>")]
    assert f"<td class=v>{pct(fit['rms_rel_error'])}</td>" in head
    assert f"<td class=v>{pct(fit['max_abs_rel_error'])}</td>" in head
    assert f"<td class=v>{pct(fit['loo_max_abs_rel_error'])}</td>" in head
    assert f"Identification: {fit['identification']['note']}" in head
    assert "8 measured numbers, 2 free parameters" in head
    clock = fit["best"]["hardware.clock_MHz"]
    assert (
        f"<tr><td><code>hardware.clock_MHz</code></td><td>{cosim.fmt.num(clock)}</td><td>50 to 400</td>"
        in head
    )
    assert "<tr><td><code>hardware.cores</code></td><td>2</td><td>choices 1, 2</td><td>yes</td>" in head
    near = fit["near_equivalent"]
    assert f"<b>{near['count']}</b> parameter combinations" in head
    assert "These are the parameter combinations these rows cannot tell apart" in head
    assert "within 0.5 percentage points (the tolerance) of the best" in head
    lo, hi = near["ranges"]["hardware.clock_MHz"]
    share = f"{(hi - lo) / 350:.1%}"
    assert f"<td>{cosim.fmt.num(lo)} to {cosim.fmt.num(hi)}</td><td>{share}</td>" in head
    assert "<td>2</td><td>1 of 2 choices</td>" in head
    assert "Not identified" not in head  # the rows pin both parameters down


def test_every_value_from_the_directory_is_escaped(page):
    assert HOSTILE not in page and NAME not in page
    assert "<title>Calibration tiny &lt;i&gt;cal&lt;/i&gt; &amp; &quot;co&quot;</title>" in page
    escaped = "&lt;script&gt;x&lt;/script&gt; &amp; &lt;b&gt;r50&lt;/b&gt;"
    tables = page[page.index("<h2>Residuals</h2>") :]
    assert tables.count(f"<tr><td>{escaped}</td>") == 4  # two metrics in each of two tables
    assert page.count("\\u003cscript") == 0  # the figures got the escaped name, not markup


def test_report_data_say_what_the_directory_says(cal_dir, page, fit):
    data = cal_dir / "report_data"
    files = {p.name for p in data.iterdir()}
    assert files == {"residuals.csv", "leave_one_out.csv", "profiles.csv", "near_equivalent.csv"}
    assert set(re.findall(r'href="report_data/([^"]+)"', page)) == files
    for name in ("residuals.csv", "leave_one_out.csv"):
        src, got = text_csv(cal_dir / name), text_csv(data / name)
        assert got[list(src.columns)].equals(src)  # every cell as written
        assert np.allclose(
            got["rel_error_pct"].astype(float), 100 * src["rel_error"].astype(float), rtol=1e-12
        )
    src, got = text_csv(cal_dir / "profiles.csv"), text_csv(data / "profiles.csv")
    key = ["parameter", "value", "rms"]
    assert sorted(map(tuple, got[key].to_numpy())) == sorted(map(tuple, src[key].to_numpy()))
    top = fit["rms_rel_error"] + fit["near_equivalent"]["tolerance"]
    assert list(got["fits_about_equally_well"]) == [str(float(v) <= top) for v in got["rms"]]
    src, got = text_csv(cal_dir / "near_equivalent.csv"), text_csv(data / "near_equivalent.csv")
    assert len(got) == len(src)  # fewer than MAX_NEAR: every row, best first
    assert sorted(map(tuple, got[list(src.columns)].to_numpy())) == sorted(map(tuple, src.to_numpy()))
    assert got["rms"].astype(float).is_monotonic_increasing
    assert list(got["hardware.cores (code)"]) == [str(["1", "2"].index(v)) for v in got["hardware.cores"]]


def test_profiles_show_the_band_and_the_flat_profile_rule(page, fit):
    top = fit["rms_rel_error"] + fit["near_equivalent"]["tolerance"]
    assert f"band to best + tolerance = {pct(top)}" in page
    assert "A flat profile, every point in the band, means the rows do not identify the parameter" in page
    assert '"type":"category"' in page  # hardware.cores is a choice
    assert page.count('"type":"rect"') == len(FREE)  # the band in each panel


def test_empty_leave_one_out_and_profiles_get_a_sentence(tmp_path):
    out = calibrate(tmp_path, "--no-loo", "--profile-points", "0")
    assert (out / "leave_one_out.csv").stat().st_size == 1 and (out / "profiles.csv").stat().st_size == 1
    page = write_calibration_report(out).read_text()
    assert "Leave-one-out was not run: leave_one_out.csv is empty" in page
    assert "No residual profiles: profiles.csv is empty" in page
    assert "<td class=v>not run</td>" in page and "not profiled" in page
    assert page.count('class="plotly-graph-div"') == 2  # residuals and the near set
    assert {p.name for p in (out / "report_data").iterdir()} == {"residuals.csv", "near_equivalent.csv"}


def test_a_rebuilt_report_drops_the_csv_of_a_figure_it_no_longer_has(copy):
    write_calibration_report(copy)
    assert (copy / "report_data" / "profiles.csv").is_file()
    (copy / "profiles.csv").write_text("\n")
    write_calibration_report(copy)
    assert not (copy / "report_data" / "profiles.csv").exists()
    assert owned_by_tool(copy, "calibration") and foreign_entries(copy, "calibration") == []


def test_a_large_near_equivalent_set_is_thinned_deterministically(copy):
    near = text_csv(copy / "near_equivalent.csv")
    big = pd.concat([near] * math.ceil(5000 / len(near)), ignore_index=True).head(5000)
    big.to_csv(copy / "near_equivalent.csv", index=False)
    page = write_calibration_report(copy).read_text()
    got = text_csv(copy / "report_data" / "near_equivalent.csv")
    assert len(got) <= MAX_NEAR and f"{len(got):,} of the file's 5,000 rows are drawn" in page
    assert got["rms"].iloc[0] == min(near["rms"], key=float)  # the best is kept
    write_calibration_report(copy)
    assert text_csv(copy / "report_data" / "near_equivalent.csv").equals(got)  # the same rows again


def test_identification_keys_added_later_are_shown_escaped(copy):
    fit = json.loads((copy / "fit.json").read_text())
    fit["identification"].update(
        not_identified=["hardware.clock_MHz"],
        independent_measurements=5,
        redundant={"tokens_per_j": "tokens_per_j x latency_s is <constant>"},
        note="8 measured numbers (5 independent), 2 free parameters <!-- -->",
    )
    fit["future_key"] = {"a": "<b>"}
    (copy / "fit.json").write_text(json.dumps(fit))
    page = write_calibration_report(copy).read_text()
    assert "Identification: 8 measured numbers (5 independent), 2 free parameters &lt;!-- --&gt;" in page
    assert "<td>Independent measured numbers</td><td class=v>5</td>" in page
    assert "<code>tokens_per_j</code>: tokens_per_j x latency_s is &lt;constant&gt;" in page
    assert "Not identified by these rows: <code>hardware.clock_MHz</code>" in page
    assert "<b>no</b>: flat profile" in page
    assert "<td>future_key</td><td class=v>{&quot;a&quot;: &quot;&lt;b&gt;&quot;}</td>" in page


@pytest.mark.parametrize("name", ["fit.json", "residuals.csv"])
def test_a_missing_required_file_is_one_report_error(copy, name):
    (copy / name).unlink()
    with pytest.raises(ReportError, match=re.escape(f"{name}: missing")):
        write_calibration_report(copy)
    assert not (copy / "report.html").exists() and not (copy / "report_data").exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("fit.json", "{", "fit.json: not valid JSON"),
        ("fit.json", '{"best": {}}', "fit.json: missing key 'rms_rel_error'"),
        ("residuals.csv", "\n", "residuals.csv: no rows"),
        ("residuals.csv", "row,metric\na,b\n", "residuals.csv: no column 'measured'"),
        ("profiles.csv", "parameter,value,rms\nhardware.clock_MHz,fast,0.1\n", "hardware.clock_MHz: 'fast'"),
    ],
)
def test_a_corrupt_file_is_one_report_error(copy, name, content, message):
    (copy / name).write_text(content)
    with pytest.raises(ReportError, match=re.escape(message)):
        write_calibration_report(copy)


def test_cli_report_builds_a_calibration_report_and_refuses_other_directories(copy, tmp_path):
    r = cosim_cli("report", copy)
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.strip() == str(copy / "report.html") and (copy / "report_data" / "residuals.csv").is_file()
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = cosim_cli("report", other)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: ")
        and "not a run or calibration directory" in lines[0]
    )
    (copy / "fit.json").unlink()
    r = cosim_cli("report", copy)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "fit.json: missing" in r.stderr


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_every_figure_renders_offline_in_chromium(cal_dir, tmp_path):
    dom = rendered_dom(cal_dir / "report.html")
    assert HOSTILE not in dom  # no element made of a row name
    body = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the page as drawn, not its code
    assert re.search(r'<div id="js-errors"[^>]*hidden[^>]*></div>', body), "a script failed"
    assert "WebGL is not supported" not in body
    figures = re.split(r'(?=<div id="figure-\d+")', body)[1:]
    assert len(figures) == 4
    for fig in figures:
        assert fig.startswith('<div id="figure-') and "js-plotly-plot" in fig[:120]
        assert fig.count('class="main-svg"') >= 2
    n = len(text_csv(cal_dir / "residuals.csv"))
    assert figures[0].count('class="point"') == n  # one bar per measured number
    assert "&lt;script&gt;x&lt;/script&gt;" in figures[0]  # the row name drawn as text
    assert figures[2].count('class="point"') >= len(text_csv(cal_dir / "profiles.csv"))
    assert figures[3].count("<canvas") >= 1  # parcoords (WebGL)
    png = screenshot(cal_dir / "report.html", tmp_path / "page.png")
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 200).mean() > 0.02, "the screenshot is blank"
