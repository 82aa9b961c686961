"""The run directory's files. Where and how they land (atomically, only over an earlier run) is
:mod:`cosim.outdir`'s business."""

from __future__ import annotations

import json
from pathlib import Path

from cosim.config import dump_resolved
from cosim.jsonio import dumps
from cosim.outdir import OutputDir, claim
from cosim.provenance import provenance
from cosim.simulate import RunResult
from cosim.traces import write_trace


def fill_run(run: RunResult, d: Path, plotlyjs_src: str | None = None) -> None:
    """Write every file of a run directory into ``d`` (a staging directory, see :mod:`cosim.outdir`);
    ``plotlyjs_src``: the report references that shared copy of plotly.js instead of embedding it."""
    (d / "config.resolved.yaml").write_text(dump_resolved(run.workload))
    (d / "summary.json").write_text(dumps(run.summary))
    run.layers.to_csv(d / "layers.csv", index=False, float_format="%.9g")
    write_trace(run.bundle.trace, d / "trace.parquet")
    timeline = run.result.timeline or {
        "traceEvents": [],
        "otherData": {"note": "no event timeline: analytic mode or outputs.timeline_steps = 0"},
    }
    (d / "timeline.json").write_text(json.dumps(timeline, separators=(",", ":")))
    (d / "provenance.json").write_text(dumps(provenance()))
    if run.workload.outputs.report:
        from reports.run_report import write_run_report

        write_run_report(d, plotlyjs_src)


def write_run(run: RunResult, out: Path, force: bool = False, plotlyjs_src: str | None = None) -> OutputDir:
    """Write a run directory at ``out``, replacing only an earlier run there (or anything, with ``force``)."""
    with claim(out, "run", force=force) as target:
        target.commit(lambda d: fill_run(run, d, plotlyjs_src))
    return target
