"""The report is self-contained and renders in a real browser with no network."""

import re
import subprocess
import sys

import pytest
import yaml
from tiny_workload import TINY

from reports.browser import chromium, rendered_dom


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "w.yaml"
    path.write_text(yaml.safe_dump(dict(TINY, outputs={"report": True, "timeline_steps": 1})))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(path), "--out", str(tmp / "run")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return tmp / "run" / "report.html"


def test_self_contained(report):
    page = report.read_text()
    assert page.count("plotly.js v") >= 1  # the library is embedded...
    assert not re.search(r"<script[^>]+src=", page)  # ...and nothing is fetched
    assert "synthetic (generated, not captured from a model)" in page


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_every_figure_renders_offline_in_chromium(report):
    dom = rendered_dom(report)
    figures = report.read_text().count('class="plotly-graph-div"')
    assert figures == 5
    assert dom.count('class="main-svg"') >= figures  # plotly drew each figure (2 SVG layers per plot)
    assert "Decode latency" in dom
