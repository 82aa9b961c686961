"""The report is self-contained and renders in a real browser with no network."""

import re

import pytest
from tiny_workload import run_tiny_with_report

from reports.browser import chromium, rendered_dom


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_tiny_with_report(tmp_path_factory.mktemp("report")) / "report.html"


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
