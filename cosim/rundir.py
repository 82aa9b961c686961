"""The run directory's files. Where and how they land (atomically, only over an earlier run) is
:mod:`cosim.outdir`'s business."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pandas as pd
import yaml

from cosim.config import dump_resolved
from cosim.jsonio import dumps
from cosim.outdir import OutputDir, claim
from cosim.provenance import provenance
from cosim.simulate import RunResult
from cosim.traces import write_trace


def csv_text(table: pd.DataFrame) -> str:
    """A table as its run-directory CSV file holds it (9 significant digits)."""
    return table.to_csv(index=False, float_format="%.9g")


def fill_run(run: RunResult, d: Path, plotlyjs_src: str | None = None) -> None:
    """Write every file of a run directory into ``d`` (a staging directory, see :mod:`cosim.outdir`); the
    report is built from the data in memory, as the files hold them (no file is read back), and with
    ``plotlyjs_src`` references that shared copy of plotly.js instead of embedding it."""
    config_text = dump_resolved(run.workload)
    (d / "config.resolved.yaml").write_text(config_text)
    (d / "summary.json").write_text(dumps(run.summary))
    layers_text = csv_text(run.layers)
    (d / "layers.csv").write_text(layers_text)
    cores = run.cores
    cores_text = csv_text(cores) if cores is not None else None
    if cores_text is not None:
        (d / "cores.csv").write_text(cores_text)
    write_trace(run.bundle.trace, d / "trace.parquet")
    timeline = run.result.timeline or {
        "traceEvents": [],
        "otherData": {"note": "no event timeline: analytic mode or outputs.timeline_steps = 0"},
    }
    timeline_text = json.dumps(timeline, separators=(",", ":"))
    (d / "timeline.json").write_text(timeline_text)
    prov = provenance()
    prov_text = dumps(prov)
    (d / "provenance.json").write_text(prov_text)
    png = run.bundle.frames_png
    if png is not None:
        (d / "frames.png").write_bytes(png)
    if run.workload.outputs.report:
        from reports.inputs import RunFiles
        from reports.run_report import write_run_report

        timeline_data = json.loads(timeline_text)  # as read back: tuples are lists, keys strings
        files = RunFiles(
            summary=json.loads(dumps(run.summary)),
            layers=pd.read_csv(StringIO(layers_text)),
            config=yaml.safe_load(config_text),
            trace=run.bundle.trace,
            timeline_events=len(timeline_data["traceEvents"]),
            provenance=json.loads(prov_text),
            timeline=timeline_data,
            cores=pd.read_csv(StringIO(cores_text)) if cores_text is not None else None,
            config_text=config_text,
            frames_png=png,
        )
        write_run_report(d, files, plotlyjs_src)


def write_run(run: RunResult, out: Path, force: bool = False, plotlyjs_src: str | None = None) -> OutputDir:
    """Write a run directory at ``out``, replacing only an earlier run there (or anything, with ``force``)."""
    with claim(out, "run", force=force) as target:
        target.commit(lambda d: fill_run(run, d, plotlyjs_src))
    return target
