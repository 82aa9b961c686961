"""The public Python API: load a workload, simulate it, read the result, write a run directory when asked.

```python
import cosim

w = cosim.load("workloads/fastcar_vilau7b_u280.yaml", {"hardware.cores": 4, "simulation.mode": "analytic"})
r = cosim.run(w)                 # nothing is written
r.summary["latency_s"], r.summary["speedup_vs_dense"]
r.layers                         # per-layer table (pandas)
r.write("runs/cores4")           # the run directory ``python -m cosim run`` writes
```

``python -m cosim run`` is :func:`load`, :func:`run` and :meth:`Result.fill`, with its output directory
claimed before the work so that an unusable ``--out`` fails at once. Every error a user can cause is a :class:`cosim.errors.InputError` whose message names what is wrong (the command line
prints it and exits 2); docs/api.md lists the names this module keeps stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosim.config import (
    Workload,
    WorkloadError,
    check_capacity,
    check_host_memory,
    load_workload,
    resolve,
)
from cosim.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["InputError", "Result", "Workload", "WorkloadError", "load", "run"]


def load(
    source: str | Path | Mapping, overrides: Mapping[str, Any] | None = None, check_memory: bool = True
) -> Workload:
    """A validated workload from a YAML file or a mapping of its sections, with ``overrides`` applied:
    dotted keys to Python values (``{"hardware.cores": 4}``), as ``--set`` items are on the command line.
    It is checked as ``run`` checks it: its data must fit the board's memory (unless ``check_memory`` is
    false: the summary's ``fits_memory`` then says whether they do) and the simulation this machine's. A
    file's relative trace and checkpoint paths are taken from its folder."""
    if isinstance(source, Mapping):
        w = resolve(dict(source), values=overrides, origin="workload")
        check_host_memory(w, origin="workload")
        if check_memory:
            check_capacity(w, origin="workload")
        return w
    return load_workload(source, values=overrides, check_memory=check_memory)


class Result:
    """One simulated workload: the run and its dense baseline. Nothing is on disk until :meth:`write`."""

    def __init__(self, run) -> None:
        self._run = run

    @property
    def workload(self) -> Workload:
        """The resolved workload (presets expanded, overrides applied)."""
        return self._run.workload

    @property
    def summary(self) -> dict:
        """Top-line metrics (docs/metrics.md), as ``summary.json`` holds them."""
        return self._run.summary

    @property
    def layers(self) -> pd.DataFrame:
        """Time per kind of work per layer (``layers.csv``)."""
        return self._run.layers

    @property
    def cores(self) -> pd.DataFrame | None:
        """Each core's compute-busy time per decode step (``cores.csv``)."""
        return self._run.cores

    @property
    def trace(self):
        """The replay trace the run used (:class:`cosim.traces.Trace`)."""
        return self._run.bundle.trace

    @property
    def timeline(self) -> dict | None:
        """The Chrome trace of ``outputs.timeline_steps`` decode steps from ``outputs.timeline_start`` (event
        mode), else None."""
        return self._run.result.timeline

    def write(self, out: str | Path, force: bool = False, plotlyjs_src: str | None = None) -> Path:
        """Write the run directory at ``out`` (the files of ``python -m cosim run``). An earlier run there
        is replaced; anything else is refused unless ``force`` (docs/errors.md). ``plotlyjs_src``: the
        report references plotly.js at that relative address instead of embedding it (docs/reports.md)."""
        from cosim.rundir import write_run

        write_run(self._run, Path(out), force=force, plotlyjs_src=plotlyjs_src)
        return Path(out)

    def fill(self, directory: Path) -> None:
        """Write the run directory's files into ``directory`` as it is (a staging directory of
        :func:`cosim.outdir.claim`); :meth:`write` is the safe way for everything else."""
        from cosim.rundir import fill_run

        fill_run(self._run, Path(directory))


def run(workload: Workload, progress: bool = False) -> Result:
    """Simulate ``workload`` (its trace loaded or generated, then the run and its dense baseline) in the
    mode it names; writes nothing."""
    from cosim.simulate import simulate
    from cosim.traces import load_trace

    bundle = load_trace(workload, progress=progress)
    return Result(simulate(workload, bundle, progress=progress))
