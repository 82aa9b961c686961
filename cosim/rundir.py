"""The run directory: written into a temporary sibling and renamed into place, so a failed run leaves
nothing half-written behind and a reader never sees a partial directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cosim.config import dump_resolved
from cosim.simulate import RunResult
from cosim.trace import write_trace


def clean_json(value):
    """JSON has no inf/NaN: write them as null; numpy scalars as plain numbers."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(data: dict) -> str:
    return json.dumps(clean_json(data), indent=2, sort_keys=True) + "\n"


def atomic_dir(out: Path, fill: Callable[[Path], None]) -> None:
    """Build the directory with ``fill(tmp)`` and move it to ``out`` (replacing an earlier run there)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a run directory is meant to be shared
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_run(run: RunResult, out: Path) -> None:
    def fill(d: Path) -> None:
        (d / "config.resolved.yaml").write_text(dump_resolved(run.workload))
        (d / "summary.json").write_text(dumps(run.summary))
        run.layers.to_csv(d / "layers.csv", index=False, float_format="%.9g")
        write_trace(run.bundle.trace, d / "trace.parquet")
        timeline = run.result.timeline or {
            "traceEvents": [],
            "otherData": {"note": "no event timeline: analytic mode or outputs.timeline_steps = 0"},
        }
        (d / "timeline.json").write_text(json.dumps(timeline, separators=(",", ":")))
        if run.workload.outputs.report:
            from reports.run_report import write_run_report

            write_run_report(d)

    atomic_dir(out, fill)
