"""Design-space sweeps: a sweep file names a base workload, the parameters to vary, the objectives and the
constraints; every point is one workload run through the public API and recorded in a SQLite database.

```yaml
version: 1
name: cores_and_replay
base: ../fastcar_vilau7b_u280.yaml        # relative to the sweep file
fixed: {simulation.mode: analytic}         # overrides every point gets
parameters:                                # any workload key (dotted)
  hardware.cores: [1, 2, 4]                # a list of values
  hardware.lanes_per_core: {range: [128, 512, 128]}     # start, stop (inclusive), step
  hardware.clock_MHz: {log: [100, 400, 5]}             # start, stop, points (log-spaced)
objectives: {latency_s: min, energy_j: min}
constraints: {fits_board: true, latency_s: {max: 600}}
strategy: {kind: grid}                     # or {kind: random, samples: 20, seed: 0}
```

Points are recorded as they finish (one transaction each), keyed by the hash of their resolved workload,
so a sweep killed at any moment resumes with ``--resume``: finished points are kept and not run again.
Objectives and constraints name keys of ``summary.json`` (docs/metrics.md) or the RTL resource estimate
(``luts``, ``ffs``, ``dsps``, ``brams``, ``urams``: ``accelerator.rtl.resources.estimate``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cosim.config import WorkloadError, dump_resolved, load_yaml
from cosim.errors import InputError, shown

SWEEP_VERSION = 1
RESOURCES = ("luts", "ffs", "dsps", "brams", "urams")
#: The largest grid a sweep file may describe (a random strategy samples from it).
MAX_POINTS = 1_000_000
DB = "results.sqlite"
_SECTIONS = {"version", "name", "base", "fixed", "parameters", "objectives", "constraints", "strategy"}


class SweepError(InputError):
    """A sweep file that cannot be run as written."""


@dataclass(frozen=True)
class Sweep:
    name: str
    base: dict  #: the base workload's raw mapping
    fixed: dict  #: dotted key -> value
    parameters: dict  #: dotted key -> list of values
    objectives: dict  #: metric -> "min" | "max"
    constraints: dict  #: metric -> {"min": x, "max": y} or a required value
    strategy: dict
    keys: tuple[str, ...] = ()  #: per point, the hash of its resolved workload (set by load_sweep)

    def points(self) -> list[dict]:
        """The parameter sets to run, in order (grid: every combination; random: ``samples`` drawn with
        ``seed``, without repeats)."""
        keys = list(self.parameters)
        grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.parameters.values())]
        if self.strategy["kind"] == "grid":
            return grid
        rng = np.random.default_rng(self.strategy.get("seed", 0))
        n = min(int(self.strategy["samples"]), len(grid))
        return [grid[i] for i in sorted(rng.choice(len(grid), size=n, replace=False))]


def _values(key: str, spec: Any) -> list:
    where = f"parameters.{key}"
    if isinstance(spec, list):
        if not spec:
            raise SweepError(f"{where}: an empty list")
        return spec
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SweepError(
            f"{where}: a list of values, or one of {{range: [start, stop, step]}}, "
            "{log: [start, stop, points]}, {choices: [...]}"
        )
    ((kind, args),) = spec.items()
    if kind == "choices" and isinstance(args, list) and args:
        return args
    if kind in ("range", "log") and isinstance(args, list) and len(args) == 3:
        if not all(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in args):
            raise SweepError(f"{where}.{kind}: three finite numbers, got {shown(args, 60)}")
        start, stop, third = args
        if kind == "range":
            if third <= 0 or stop < start:
                raise SweepError(f"{where}.range: needs start <= stop and a positive step")
            n = int(math.floor((stop - start) / third + 1e-9)) + 1
            if n > MAX_POINTS:
                raise SweepError(f"{where}.range: {n:,} values; at most {MAX_POINTS:,}")
            out = [start + i * third for i in range(n)]
            return [int(v) if all(isinstance(a, int) for a in args) else float(v) for v in out]
        if start <= 0 or stop < start or int(third) != third or not 1 <= third <= MAX_POINTS:
            raise SweepError(
                f"{where}.log: needs 0 < start <= stop and a whole number of points (1 to {MAX_POINTS:,})"
            )
        return [float(v) for v in np.geomspace(start, stop, int(third))]
    raise SweepError(f"{where}: unknown form {shown(spec, 60)}")


def load_sweep(path: str | Path) -> tuple[Sweep, str]:
    """The sweep and its file's text (kept in the sweep directory to resume against)."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a YAML mapping")
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise SweepError(f"{path}: {unknown[0]}: not a sweep key (keys: {', '.join(sorted(_SECTIONS))})")
    if raw.get("version", SWEEP_VERSION) != SWEEP_VERSION:
        raise SweepError(f"{path}: version: {raw.get('version')!r} is not {SWEEP_VERSION}")
    for key in ("name", "base", "parameters", "objectives"):
        if key not in raw:
            raise SweepError(f"{path}: {key}: missing")
    base_path = (path.parent / str(raw["base"])).resolve()
    if not base_path.is_file():
        raise SweepError(f"{path}: base: {raw['base']} is not a file (relative to the sweep file)")
    base = load_yaml(base_path)
    params = raw["parameters"]
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{path}: parameters: a mapping of workload keys to values")
    parameters = {str(k): _values(str(k), v) for k, v in params.items()}
    size = math.prod(len(v) for v in parameters.values())
    if size > MAX_POINTS:
        raise SweepError(f"{path}: parameters: the grid has {size:,} points; at most {MAX_POINTS:,}")
    objectives = raw["objectives"]
    if not isinstance(objectives, dict) or not objectives:
        raise SweepError(f"{path}: objectives: a mapping of metrics to min or max")
    for k, v in objectives.items():
        if v not in ("min", "max"):
            raise SweepError(f"{path}: objectives.{k}: min or max, got {shown(v, 40)}")
    constraints = raw.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise SweepError(f"{path}: constraints: a mapping of metrics to bounds")
    for k, v in constraints.items():
        if isinstance(v, dict) and not set(v) <= {"min", "max"}:
            raise SweepError(f"{path}: constraints.{k}: only min and max bounds")
    strategy = raw.get("strategy") or {"kind": "grid"}
    if not isinstance(strategy, dict) or strategy.get("kind") not in ("grid", "random"):
        raise SweepError(f"{path}: strategy.kind: grid or random")
    if strategy["kind"] == "random" and not (
        isinstance(strategy.get("samples"), int) and strategy["samples"] > 0
    ):
        raise SweepError(f"{path}: strategy.samples: a positive whole number for a random sweep")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: fixed: a mapping of workload keys to values")
    sweep = Sweep(str(raw["name"]), base, fixed, parameters, objectives, constraints, strategy)
    text = path.read_text()
    # every point must be a valid workload: check them all before any work (the first bad one is named)
    from cosim.api import load

    points, keys = sweep.points(), []
    for point in points:
        try:
            keys.append(point_key(load(base, {**fixed, **point})))
        except WorkloadError as exc:
            raise SweepError(f"{path}: point {point}: {exc}") from None
    _check_metrics(path, sweep, points[0])
    return replace(sweep, keys=tuple(keys)), text


def _check_metrics(path: Path, sweep: Sweep, point: dict) -> None:
    """Objectives and constraints must name metrics a run reports: the first point's summary (analytic,
    a fraction of a second) says which."""
    from cosim.api import load, run

    wanted = [m for m in (*sweep.objectives, *sweep.constraints) if m not in RESOURCES]
    if not wanted:
        return
    known = run(load(sweep.base, {**sweep.fixed, **point, "simulation.mode": "analytic"})).summary
    for section in ("objectives", "constraints"):
        for m in getattr(sweep, section):
            if m not in RESOURCES and m not in known:
                raise SweepError(
                    f"{path}: {section}.{m}: not a metric of a run (summary.json keys, docs/metrics.md, or "
                    f"{', '.join(RESOURCES)})"
                )


# ---------------------------------------------------------------------------------------------------
# One point
# ---------------------------------------------------------------------------------------------------


def point_key(workload) -> str:
    """The point's identity: a hash of its resolved workload."""
    return hashlib.sha256(dump_resolved(workload).encode()).hexdigest()[:16]


#: Per worker process: traces and dense baselines already made, keyed by what determines them, so that
#: points that differ only in the hardware reuse the trace, and points that differ only in the policy
#: reuse the dense baseline.
_TRACES: OrderedDict[str, Any] = OrderedDict()
_DENSE: OrderedDict[str, Any] = OrderedDict()
#: Entries kept per cache (the most recently used): a paper-size trace is a few MB.
CACHE_ENTRIES = 16


def _key(w, sections: tuple[str, ...]) -> str:
    return json.dumps(w.model_dump(mode="json", include=set(sections)), sort_keys=True)


def _cached(cache: OrderedDict, key: str, make: Callable[[], Any]) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    if len(cache) > CACHE_ENTRIES:
        cache.popitem(last=False)
    return value


def evaluate(base: dict, overrides: dict, metrics: list[str]) -> dict:
    """Run one point; the metrics it was asked for (summary keys and resource estimates)."""
    from accelerator.rtl.resources import estimate
    from cosim.api import load
    from cosim.simulate import dense_baseline, simulate
    from cosim.sources import load_trace

    w = load(base, overrides)
    trace_key = _key(w, ("model", "video", "trace", "policy", "sparse_attention")) + str(w.simulation.seed)
    bundle = _cached(_TRACES, trace_key, lambda: load_trace(w))
    dense_key = _key(w, ("model", "video", "hardware", "scheduler", "sparse_attention", "simulation"))
    dense = _cached(_DENSE, dense_key, lambda: dense_baseline(w))
    summary = simulate(w, bundle, dense=dense).summary
    est = estimate(w.hardware) if any(m in RESOURCES for m in metrics) else {}
    out = {}
    for m in metrics:
        if m in RESOURCES:
            out[m] = float(est[m])
        elif m in summary:
            v = summary[m]
            out[m] = v if isinstance(v, bool | str) else float(v)
        else:
            raise SweepError(f"{m}: not a metric of a run (summary.json keys, or {', '.join(RESOURCES)})")
    return out


def _worker(args) -> tuple[str, dict | None, str, float]:
    key, base, overrides, metrics = args
    t0 = time.perf_counter()
    try:
        return key, evaluate(base, overrides, metrics), "", time.perf_counter() - t0
    except InputError as exc:
        return key, None, str(exc), time.perf_counter() - t0


def meets(values: dict, constraints: dict) -> bool:
    for m, bound in constraints.items():
        v = values.get(m)
        if isinstance(bound, dict):
            if v is None or ("min" in bound and v < bound["min"]) or ("max" in bound and v > bound["max"]):
                return False
        elif v != bound:
            return False
    return True


def pareto(rows: list[dict], objectives: dict) -> list[dict]:
    """The rows no other row dominates (at least as good in every objective, better in one)."""
    sign = {m: (1 if d == "min" else -1) for m, d in objectives.items()}

    def vec(r):
        return [sign[m] * r[m] for m in objectives]

    vs = [vec(r) for r in rows]
    front = []
    for i, a in enumerate(vs):
        dominated = any(
            all(b[k] <= a[k] for k in range(len(a))) and any(b[k] < a[k] for k in range(len(a)))
            for j, b in enumerate(vs)
            if j != i
        )
        if not dominated:
            front.append(rows[i])
    return front


# ---------------------------------------------------------------------------------------------------
# The database and the run
# ---------------------------------------------------------------------------------------------------


def open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS points (key TEXT PRIMARY KEY, params TEXT, status TEXT, values_json "
        "TEXT, constraints_met INTEGER, error TEXT, duration_s REAL, version TEXT)"
    )
    db.commit()
    return db


def run_sweep(
    sweep: Sweep, out: Path, jobs: int = 1, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Run every point not yet in ``out``'s database; returns counts and the result rows."""
    metrics = list(dict.fromkeys([*sweep.objectives, *sweep.constraints]))
    db = open_db(out / DB)
    done = {k for (k,) in db.execute("SELECT key FROM points")}
    todo, params_of = [], {}
    for point, key in zip(sweep.points(), sweep.keys, strict=True):
        params_of[key] = point
        if key not in done:
            todo.append((key, sweep.base, {**sweep.fixed, **point}, metrics))
    version = _version()
    finished = 0

    def record(key, values, error, duration):
        nonlocal finished
        ok = values is not None
        db.execute(
            "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                json.dumps(params_of[key], sort_keys=True),
                "done" if ok else "error",
                json.dumps(values) if ok else None,
                int(meets(values, sweep.constraints)) if ok else 0,
                error,
                duration,
                version,
            ),
        )
        db.commit()  # one transaction per finished point: a kill loses only the points in flight
        finished += 1
        if progress:
            progress(finished, len(todo))

    if jobs <= 1:
        for item in todo:
            record(*_worker(item))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for fut in as_completed([pool.submit(_worker, item) for item in todo]):
                record(*fut.result())
    rows = results(db, sweep)
    db.close()
    return {"ran": len(todo), "skipped": len(done & set(params_of)), "rows": rows}


def results(db: sqlite3.Connection, sweep: Sweep) -> list[dict]:
    rows = []
    for key, params, status, values, met, error, duration in db.execute(
        "SELECT key, params, status, values_json, constraints_met, error, duration_s FROM points ORDER BY key"
    ):
        row = {"key": key, **json.loads(params), "status": status, "constraints_met": bool(met)}
        row.update(json.loads(values) if values else {})
        row.update(error=error or "", duration_s=duration)
        rows.append(row)
    return rows


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastcar-cosim")
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------------
# The sweep directory
# ---------------------------------------------------------------------------------------------------


def prepare(sweep: Sweep, spec_text: str, out: Path, resume: bool, force: bool) -> str:
    """Create the sweep directory (or reopen it with ``resume``); returns what happened, for the user."""
    from cosim.outdir import claim, owned_by_tool

    if resume:
        if not ((out / DB).is_file() and owned_by_tool(out, "sweep")):
            raise SweepError(f"--resume: {out} holds no sweep this tool wrote; run without --resume first")
        if (out / "sweep.yaml").read_text() != spec_text:
            raise SweepError(
                f"--resume: the sweep file changed since {out} was started; give another --out to run it"
            )
        return "resumed"
    if (out / DB).is_file() and owned_by_tool(out, "sweep") and not force:
        raise SweepError(
            f"{out}: holds a sweep already; pass --resume to finish it, or --force to start over"
        )

    def init(d: Path) -> None:
        (d / "sweep.yaml").write_text(spec_text)
        open_db(d / DB).close()

    with claim(out, "sweep", force=force) as target:
        target.commit(init)
    return "started"


def write_outputs(sweep: Sweep, rows: list[dict], out: Path) -> list[dict]:
    """``results.csv``/``results.parquet`` (every point) and ``pareto.csv`` (the front of the finished
    points that meet the constraints); returns the front."""
    import pandas as pd

    from cosim.outdir import atomic_write_text

    df = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    df.to_parquet(out / "results.parquet.tmp", index=False)
    (out / "results.parquet.tmp").replace(out / "results.parquet")
    ok = [r for r in rows if r["status"] == "done" and r["constraints_met"]]
    front = pareto(ok, sweep.objectives)
    cols = ["key", *sweep.parameters, *sweep.objectives]
    atomic_write_text(out / "pareto.csv", pd.DataFrame(front, columns=cols).to_csv(index=False))
    return front
