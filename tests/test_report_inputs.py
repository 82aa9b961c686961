"""`cosim report` on run directories that are incomplete, corrupt or crafted: a one-line ReportError (exit
2) naming the file, no markup from the files in the page, and report.html replaced atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_report import FIGURES
from tiny_workload import run_tiny_with_report

from cosim.errors import InputError
from reports.browser import chromium, rendered_dom
from reports.run_report import ReportError, figure_html, script_json, write_run_report


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return run_tiny_with_report(tmp_path_factory.mktemp("report_inputs"))


@pytest.fixture
def run_dir(pristine, tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(pristine, d)
    return d


def cli_report(d: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cosim", "report", str(d)], capture_output=True, text=True)


def edit_json(name: str, change):
    def edit(d: Path) -> None:
        data = json.loads((d / name).read_text())
        change(data)
        (d / name).write_text(json.dumps(data))

    return edit


def edit_yaml(change):
    def edit(d: Path) -> None:
        data = yaml.safe_load((d / "config.resolved.yaml").read_text())
        change(data)
        (d / "config.resolved.yaml").write_text(yaml.safe_dump(data))

    return edit


def write(name: str, content: str | bytes):
    def edit(d: Path) -> None:
        p = d / name
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)

    return edit


def delete(name: str):
    return lambda d: (d / name).unlink()


def truncate(name: str, keep: float):
    def edit(d: Path) -> None:
        p = d / name
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])

    return edit


def drop_column(col: str):
    def edit(d: Path) -> None:
        import pandas as pd

        pd.read_csv(d / "layers.csv").drop(columns=[col]).to_csv(d / "layers.csv", index=False)

    return edit


CASES = [
    # layers.csv
    ("layers.csv", delete("layers.csv"), "missing (incomplete run directory)"),
    ("layers.csv", write("layers.csv", ""), "empty file"),
    ("layers.csv", write("layers.csv", "layer,replay_ratio\n"), "no rows"),
    ("layers.csv", drop_column("replay_ratio"), "missing column 'replay_ratio'"),
    ("layers.csv", write("layers.csv", "layer,replay_ratio,mlp_s\n0,x,1\n"), "'replay_ratio' holds"),
    ("layers.csv", write("layers.csv", b"layer,replay_ratio\n\xff\xfe,1\n"), "layers.csv: "),
    # trace.parquet
    ("trace.parquet", delete("trace.parquet"), "missing (incomplete run directory)"),
    ("trace.parquet", write("trace.parquet", b""), "empty file"),
    ("trace.parquet", truncate("trace.parquet", 0.5), "trace.parquet"),
    ("trace.parquet", write("trace.parquet", b"PAR1 not really a parquet file PAR1"), "trace.parquet"),
    # config.resolved.yaml
    ("config.resolved.yaml", delete("config.resolved.yaml"), "missing (incomplete run directory)"),
    ("config.resolved.yaml", write("config.resolved.yaml", "\n"), "empty file"),
    ("config.resolved.yaml", write("config.resolved.yaml", "a: [1\nb: }"), "not valid YAML"),
    ("config.resolved.yaml", write("config.resolved.yaml", "- 1\n- 2\n"), "a YAML list, not a mapping"),
    ("config.resolved.yaml", edit_yaml(lambda c: c.pop("hardware")), "hardware is missing"),
    (
        "config.resolved.yaml",
        edit_yaml(lambda c: c["hardware"].pop("cores")),
        "hardware: missing key 'cores'",
    ),
    (
        "config.resolved.yaml",
        edit_yaml(lambda c: c["hardware"].update(clock_MHz="<b>fast</b>")),
        "clock_MHz is '<b>fast</b>', it must be a number",
    ),
    # timeline.json
    ("timeline.json", delete("timeline.json"), "missing (incomplete run directory)"),
    ("timeline.json", write("timeline.json", ""), "empty file"),
    ("timeline.json", truncate("timeline.json", 0.5), "not valid JSON"),
    ("timeline.json", write("timeline.json", '{"events": []}'), "no traceEvents list"),
    # summary.json (present: the CLI refuses a directory without one before the report starts)
    ("summary.json", write("summary.json", ""), "empty file"),
    ("summary.json", truncate("summary.json", 0.5), "not valid JSON"),
    ("summary.json", write("summary.json", "[1, 2]"), "a JSON list, not an object"),
    ("summary.json", write("summary.json", b'{"a": "\xff"}'), "not UTF-8"),
    ("summary.json", edit_json("summary.json", lambda s: s.pop("policy")), "missing key 'policy'"),
    ("summary.json", edit_json("summary.json", lambda s: s.pop("breakdown_s")), "missing key 'breakdown_s'"),
    ("summary.json", edit_json("summary.json", lambda s: s.update(batch="4")), "batch is '4'"),
    (
        "summary.json",
        edit_json("summary.json", lambda s: s["breakdown_s"].update(mlp="slow")),
        "breakdown_s is",
    ),
    (
        "summary.json",
        edit_json("summary.json", lambda s: s["resources_estimate"].update(luts="many")),
        "resources_estimate: luts is 'many'",
    ),
    ("summary.json", edit_json("summary.json", lambda s: s.update(quality=[1])), "quality is [1]"),
    (
        "summary.json",
        edit_json("summary.json", lambda s: s.update(drs_off_core_busy_s=[1.0])),
        "core_busy_s has 2 cores and drs_off_core_busy_s 1",
    ),
    ("summary.json", edit_json("summary.json", lambda s: s.update(core_busy_s="x")), "core_busy_s is 'x'"),
    # cores.csv (optional: runs written before it existed have none)
    ("cores.csv", write("cores.csv", "step,frame\n0,0\n"), "missing column 'start_s'"),
    ("cores.csv", write("cores.csv", ""), "empty file"),
]


@pytest.mark.parametrize("name, corrupt, fragment", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_corrupt_run_directory_is_a_report_error(run_dir, name, corrupt, fragment):
    before = (run_dir / "report.html").read_bytes()
    corrupt(run_dir)
    with pytest.raises(ReportError) as info:
        write_run_report(run_dir)
    msg = str(info.value)
    assert isinstance(info.value, InputError)
    assert str(run_dir / name) in msg and fragment in msg and "\n" not in msg, msg
    assert (run_dir / "report.html").read_bytes() == before  # nothing written


@pytest.mark.parametrize(
    "corrupt",
    [delete("layers.csv"), write("summary.json", "{oops"), truncate("trace.parquet", 0.3)],
    ids=["missing-layers", "summary-not-json", "truncated-trace"],
)
def test_cli_report_exits_2_with_one_line(run_dir, corrupt):
    corrupt(run_dir)
    r = cli_report(run_dir)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert str(run_dir) in lines[0] and "Traceback" not in r.stderr


# -- crafted strings stay text ----------------------------------------------------------------------

PAYLOAD = (
    "</script><script>document.body.setAttribute('data-pwned','1');alert(1)</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"><!--"
)


def craft(d: Path) -> None:
    s = json.loads((d / "summary.json").read_text())
    for key in ("workload", "model", "hardware", "policy", "mode", "trace_label"):
        s[key] = f"{key} {PAYLOAD}"
    s["latency_s"] = PAYLOAD  # a metric row given a string
    s["tau"] = [1.0, 2.0]
    s["quality"] = {PAYLOAD: PAYLOAD, "psnr_db": 31.5}
    s["resources_estimate"]["label"] = PAYLOAD
    s["energy_breakdown_j"] = {PAYLOAD: 1.0, "cores": 2.0}
    s["dense_energy_breakdown_j"] = {PAYLOAD: 3.0}
    s["quality"]["psnr_db_mean"] = PAYLOAD  # a spread given a string
    (d / "summary.json").write_text(json.dumps(s))
    edit_yaml(lambda c: c.update(name=PAYLOAD))(d)
    edit_json("timeline.json", lambda t: t["traceEvents"][0]["args"].update(name="cores"))(d)
    edit_json("timeline.json", lambda t: t["traceEvents"][1]["args"].update(name=PAYLOAD))(d)


def test_crafted_strings_are_escaped(run_dir):
    craft(run_dir)
    page = write_run_report(run_dir).read_text()
    figures = page.count('class="plotly-graph-div"')
    assert figures == FIGURES
    # the only script elements are plotly.js (2), the error catcher and one per figure: none from the data
    assert page.count("<script") == page.count("</script") == 3 + figures
    assert "<img" not in page and "<!--" not in page.split("<script>", 2)[0]
    assert PAYLOAD not in page
    assert html_escaped(PAYLOAD) in page  # shown as text
    assert "policy " + html_escaped(PAYLOAD) in page
    config = page.split("<details>", 1)[1].split("</details>", 1)[0]  # the resolved configuration
    assert "name: " in config and "&lt;/script&gt;" in config


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_script_json_cannot_end_a_script():
    text = json.dumps({"a": "</script><!-- ]]> & \u2028"}, ensure_ascii=False)
    safe = script_json(text)
    assert "<" not in safe and ">" not in safe and "&" not in safe and "\u2028" not in safe
    assert json.loads(safe) == json.loads(text)


def test_figure_html_escapes_whatever_plotly_does(monkeypatch):
    """Even if the plotting library stopped escaping its JSON, a figure cannot end its script."""
    import plotly.graph_objects as go
    import plotly.io as pio

    monkeypatch.setattr(pio, "to_json", lambda fig, **kw: json.dumps(fig.to_plotly_json()))
    fig = go.Figure(go.Bar(x=[1], y=[PAYLOAD]))
    part = figure_html(fig, "f")
    assert part.count("<script") == part.count("</script") == 1 and "<img" not in part


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_crafted_report_runs_no_injected_code_in_chromium(run_dir):
    craft(run_dir)
    dom = rendered_dom(write_run_report(run_dir))
    assert "data-pwned=" not in dom  # no injected script or handler ran
    assert "<img" not in dom
    assert dom.count('class="main-svg"') >= FIGURES  # and every figure still drew
    assert "workload " in dom and "alert(1)" in dom  # the payload is there, as text


# -- atomic replacement -------------------------------------------------------------------------------

WRITE_UNDER_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from reports.run_report import write_run_report
try:
    write_run_report(sys.argv[1])
except OSError as exc:
    print("write failed:", exc.errno)
    sys.exit(3)
"""


def test_full_disk_leaves_the_old_report_whole(run_dir):
    """A report that cannot be written in full (the file size limit stands in for a full disk) leaves
    the previous report.html byte for byte, and no temporary file behind."""
    before = (run_dir / "report.html").read_bytes()
    limit = len(before) // 3
    r = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_LIMIT, str(run_dir), str(limit)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert r.returncode == 3 and "write failed" in r.stdout, r.stderr
    assert (run_dir / "report.html").read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")) == []


def test_failure_midway_leaves_the_old_report_whole(run_dir, monkeypatch):
    """The write raising halfway through (here: the file object) keeps the old report and its figures'
    CSVs intact: they are replaced together or not at all."""
    before = (run_dir / "report.html").read_bytes()
    (run_dir / "report_data" / "energy.csv").write_text("old\n")
    data_before = {p.name: p.read_bytes() for p in (run_dir / "report_data").iterdir()}
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: HalfWriter(real_fdopen(*a, **kw)))
    with pytest.raises(OSError, match="No space left"):
        write_run_report(run_dir)
    monkeypatch.undo()
    assert (run_dir / "report.html").read_bytes() == before
    assert {p.name: p.read_bytes() for p in (run_dir / "report_data").iterdir()} == data_before
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    write_run_report(run_dir)  # and a later rebuild works
    assert (run_dir / "report_data" / "energy.csv").read_text().startswith("component,")
