"""Design-space sweeps: a sweep file names a base workload, the parameters to vary, the objectives and the
constraints; every point is one workload run through the public API and recorded in a database.

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
                                           # or {kind: optuna, sampler: nsga2, trials: 200, seed: 0}
confirm: {simulation.mode: event}          # optional: re-run the Pareto front with these overrides
record: [dense_latency_s, replay_ratio]    # optional: further metrics to keep per point
```

Points are recorded as they finish, keyed by the hash of their resolved workload, so a sweep killed at any
moment resumes with ``--resume``: finished points are kept and not run again (cosim/sweep_store.py).
Objectives and constraints name keys of ``summary.json`` (docs/metrics.md), the RTL resource estimate
(``luts``, ``ffs``, ``dsps``, ``brams``, ``urams``: ``accelerator.rtl.resources.estimate``) or the quality
estimates of ``cosim.quality_model`` (``quality_psnr_db``, ...).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cosim.config import WorkloadError, load_anchored_yaml, load_yaml
from cosim.errors import InputError, shown
from cosim.sweep_exec import QUALITY, RESOURCES, executor, run_batch
from cosim.sweep_store import Store, sqlite_url

SWEEP_VERSION = 1
#: The largest grid a sweep file may describe (a random or optuna strategy samples from it).
MAX_POINTS = 1_000_000
DB = "results.sqlite"
_SECTIONS = {
    "version",
    "name",
    "base",
    "fixed",
    "parameters",
    "objectives",
    "constraints",
    "strategy",
    "confirm",
    "record",
}
_STRATEGIES = ("grid", "random", "optuna")


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
    confirm: dict  #: overrides that re-run the Pareto front (e.g. in the event model); empty: no re-run
    record: tuple[str, ...] = ()  #: further metrics to keep per point

    @property
    def metrics(self) -> list[str]:
        """What each point records: the objectives', the constraints' and the ``record`` metrics."""
        return list(dict.fromkeys([*self.objectives, *self.constraints, *self.record]))

    keys: tuple[str, ...] = ()  #: per point, the hash of its resolved workload (grid and random)

    def points(self) -> list[dict]:
        """The parameter sets to run, in order (grid: every combination; random: ``samples`` drawn with
        ``seed``, without repeats). An optuna sweep's points are chosen as it runs."""
        keys = list(self.parameters)
        grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.parameters.values())]
        if self.strategy["kind"] == "grid":
            return grid
        rng = np.random.default_rng(self.strategy.get("seed", 0))
        n = min(int(self.strategy["samples"]), len(grid))
        return [grid[i] for i in sorted(rng.choice(len(grid), size=n, replace=False))]


#: Changes when the way a key is computed changes, so that no database mixes two kinds of key.
KEY_VERSION = 2


def point_key(workload) -> str:
    """The point's identity: a hash of its resolved workload (as JSON: a YAML dump costs 60x more)."""
    text = json.dumps(workload.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(f"{KEY_VERSION}\n{text}".encode()).hexdigest()[:16]


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
            if all(isinstance(a, int) for a in args):
                return [start + i * third for i in range(n)]
            return [round(start + i * third, 12) for i in range(n)]  # 0.3, not 0.30000000000000004
        if start <= 0 or stop < start or int(third) != third or not 1 <= third <= MAX_POINTS:
            raise SweepError(
                f"{where}.log: needs 0 < start <= stop and a whole number of points (1 to {MAX_POINTS:,})"
            )
        # 12 significant digits: 512, not 511.99999999999955 (a whole number stays one between whole ends)
        values = [float(f"{v:.12g}") for v in np.geomspace(start, stop, int(third))]
        whole = isinstance(start, int) and isinstance(stop, int)
        return [int(v) if whole and v.is_integer() else v for v in values]
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
    base = load_anchored_yaml(base_path)
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
    # a design whose data do not fit the board's memory is run and recorded, never feasible
    constraints = {"fits_memory": True, **constraints}
    strategy = _strategy(path, raw.get("strategy") or {"kind": "grid"})
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: fixed: a mapping of workload keys to values")
    confirm = raw.get("confirm") or {}
    if not isinstance(confirm, dict):
        raise SweepError(
            f"{path}: confirm: a mapping of workload keys to values (e.g. simulation.mode: event)"
        )
    record = raw.get("record") or []
    if not isinstance(record, list) or not all(isinstance(m, str) for m in record):
        raise SweepError(f"{path}: record: a list of metric names (summary.json keys) to keep per point")
    sweep = Sweep(
        str(raw["name"]), base, fixed, parameters, objectives, constraints, strategy, confirm, tuple(record)
    )
    text = path.read_text()
    # every point must be a valid workload: check them all before any work (the first bad one is named);
    # a search checks each value of each parameter against the first point (its grid may be vast)
    from cosim.api import load

    points, keys = (sweep.points(), []) if strategy["kind"] != "optuna" else (_one_at_a_time(sweep), None)
    for point in points:
        try:
            key = point_key(load(base, {**fixed, **point}, check_memory=False))
        except WorkloadError as exc:
            raise SweepError(f"{path}: point {point}: {exc}") from None
        if keys is not None:
            keys.append(key)
    if confirm:
        try:
            same = point_key(load(base, {**fixed, **points[0], **confirm}, check_memory=False)) == point_key(
                load(base, {**fixed, **points[0]}, check_memory=False)
            )
        except WorkloadError as exc:
            raise SweepError(f"{path}: confirm: {exc}") from None
        if same:
            raise SweepError(f"{path}: confirm: {shown(confirm, 60)} changes nothing in the points")
    _check_metrics(path, sweep, points[0])
    return replace(sweep, keys=tuple(keys or ())), text


def _strategy(path: Path, strategy: Any) -> dict:
    if not isinstance(strategy, dict) or strategy.get("kind") not in _STRATEGIES:
        raise SweepError(f"{path}: strategy.kind: one of {', '.join(_STRATEGIES)}")
    kind = strategy["kind"]
    allowed = {"grid": {"kind"}, "random": {"kind", "samples", "seed"}}.get(kind) or {
        "kind",
        "sampler",
        "trials",
        "seed",
        "population",
    }
    extra = sorted(set(strategy) - allowed)
    if extra:
        raise SweepError(f"{path}: strategy.{extra[0]}: not a setting of a {kind} strategy")
    count = {"random": "samples", "optuna": "trials"}.get(kind)
    if count and not (isinstance(strategy.get(count), int) and strategy[count] > 0):
        raise SweepError(f"{path}: strategy.{count}: a positive whole number for a {kind} sweep")
    if "seed" in strategy and not isinstance(strategy["seed"], int):
        raise SweepError(f"{path}: strategy.seed: a whole number")
    if kind == "optuna":
        from cosim.sweep_search import SAMPLERS

        strategy = {"sampler": "nsga2", "seed": 0, **strategy}
        if strategy["sampler"] not in SAMPLERS:
            raise SweepError(f"{path}: strategy.sampler: one of {', '.join(SAMPLERS)}")
        pop = strategy.get("population")
        if pop is not None and not (isinstance(pop, int) and pop >= 2):
            raise SweepError(f"{path}: strategy.population: a whole number of at least 2 (NSGA-II)")
    return strategy


def _one_at_a_time(sweep: Sweep) -> list[dict]:
    first = {k: v[0] for k, v in sweep.parameters.items()}
    return [first] + [{**first, k: v} for k, vs in sweep.parameters.items() for v in vs[1:]]


def _check_metrics(path: Path, sweep: Sweep, point: dict) -> None:
    """Objectives and constraints must name metrics a run reports: the first point's summary (analytic,
    a fraction of a second) says which."""
    from cosim.api import load, run

    wanted = [m for m in sweep.metrics if m not in RESOURCES + QUALITY]
    if not wanted:
        return
    known = run(
        load(sweep.base, {**sweep.fixed, **point, "simulation.mode": "analytic"}, check_memory=False)
    ).summary
    for section in ("objectives", "constraints", "record"):
        for m in getattr(sweep, section):
            if m not in RESOURCES + QUALITY and m not in known:
                raise SweepError(
                    f"{path}: {section}.{m}: not a metric of a run (summary.json keys, docs/metrics.md, or "
                    f"{', '.join(RESOURCES + QUALITY)})"
                )
            if m in known and not isinstance(known[m], int | float | str):
                raise SweepError(
                    f"{path}: {section}.{m}: a table of values, not one number; name one of its entries "
                    "as its own summary key (docs/metrics.md)"
                )


def violations(values: dict, constraints: dict) -> list[float]:
    """By how much each constraint is missed (0 where it is met; Optuna's convention: > 0 is infeasible)."""
    out = []
    for m, bound in constraints.items():
        v = values.get(m)
        if isinstance(bound, dict):
            if v is None:
                out.append(math.inf)
                continue
            out.append(max(0.0, bound.get("min", v) - v, v - bound.get("max", v)))
        else:
            out.append(0.0 if v == bound else 1.0)
    return out


def meets(values: dict, constraints: dict) -> bool:
    return all(x <= 0 for x in violations(values, constraints))


def pareto(rows: list[dict], objectives: dict) -> list[dict]:
    """The rows no other row dominates (at least as good in every objective, better in one). A row with
    a missing or NaN objective is on no front."""
    sign = {m: (1 if d == "min" else -1) for m, d in objectives.items()}
    rows = [r for r in rows if all(isinstance(r.get(m), int | float) and r[m] == r[m] for m in objectives)]
    vs = [[sign[m] * r[m] for m in objectives] for r in rows]
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
# The run
# ---------------------------------------------------------------------------------------------------


def run_sweep(
    sweep: Sweep,
    out: Path,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    storage: str | None = None,
    scheduler: str | None = None,
) -> dict:
    """Run every point not yet finished in the study's database (``out/results.sqlite`` unless
    ``storage`` names another), on ``jobs`` local processes or the Dask cluster at ``scheduler``; then,
    with ``confirm``, the Pareto front again. Returns counts and the result rows."""
    store = Store(storage or sqlite_url(out / DB), sweep.name)
    try:
        with executor(jobs, scheduler) as (pool, depth):
            runner = Runner(sweep, store, pool, depth, progress)
            if sweep.strategy["kind"] == "optuna":
                from cosim.sweep_search import search

                search(sweep, runner)
            else:
                runner.run_points(list(zip(sweep.keys, sweep.points(), strict=True)), "screen")
            if sweep.confirm:
                runner.run_points(_confirm_points(sweep, store.rows()), "confirm", sweep.confirm)
        return {"ran": runner.ran, "skipped": runner.skipped, "rows": store.rows()}
    finally:
        store.close()


def _confirm_points(sweep: Sweep, rows: list[dict]) -> list[tuple[str, dict]]:
    from cosim.api import load

    screened = [r for r in rows if r["stage"] == "screen" and r["status"] == "done" and r["constraints_met"]]
    front = [{k: r[k] for k in sweep.parameters} for r in pareto(screened, sweep.objectives)]
    return [
        (point_key(load(sweep.base, {**sweep.fixed, **p, **sweep.confirm}, check_memory=False)), p)
        for p in front
    ]


def _reuse_order(params: dict) -> str:
    """Points that differ only in the hardware are handed out together: they share a trace."""
    return repr(sorted((k, repr(v)) for k, v in params.items() if not k.startswith("hardware.")))


class Runner:
    """Hands points to the executor in batches, keeps ``depth`` batches in flight, records each batch's
    results in one transaction."""

    def __init__(self, sweep: Sweep, store: Store, pool, depth: int, progress) -> None:
        self.sweep, self.store, self.pool, self.depth, self.progress = sweep, store, pool, depth, progress
        self.metrics = sweep.metrics
        from cosim.provenance import tool_version

        self.version = tool_version()
        self.ran = self.skipped = self.total = 0

    def drive(self, take: Callable[[], list | None], on_result: Callable[[list[dict]], None]) -> None:
        """``take`` gives the next batch of (key, overrides), ``[]`` when it had nothing to run after all,
        None when there is no more work."""
        inflight: dict = {}
        more = True
        while True:
            while more and len(inflight) < self.depth:
                batch = take()
                if batch is None:
                    more = False
                elif batch:
                    inflight[self.pool.submit(run_batch, self.sweep.base, self.metrics, batch)] = batch
            if not inflight:
                return
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                del inflight[fut]
                on_result(self.record(fut.result()))

    def record(self, results: list[dict]) -> list[dict]:
        rows = []
        for r in results:
            ok = r["values"] is not None
            met = ok and meets(r["values"], self.sweep.constraints)
            rows.append(
                {**r, "status": "done" if ok else "error", "constraints_met": met, "version": self.version}
            )
        self.store.record(rows)
        self.ran += len(rows)
        if self.progress:
            self.progress(self.ran, self.total)
        return rows

    def fail(self, key: str, params: dict, error: str) -> None:
        """Record a point that cannot be run (a search proposed an invalid combination)."""
        if self.store.claim({key: ("screen", params)}):
            self.total += 1
            self.record([{"key": key, "values": None, "error": error, "duration_s": 0.0}])

    def run_points(self, items: list[tuple[str, dict]], stage: str, extra: dict | None = None) -> None:
        finished = self.store.finished()
        todo = sorted(((k, p) for k, p in items if k not in finished), key=lambda kp: _reuse_order(kp[1]))
        self.skipped += len(items) - len(todo)
        self.total += len(todo)
        size = max(1, min(16, len(todo) // (4 * self.depth)))
        queue = todo[::-1]

        def take() -> list | None:
            while queue:
                chunk = [queue.pop() for _ in range(min(size, len(queue)))]
                mine = set(self.store.claim({k: (stage, p) for k, p in chunk}))
                batch = [(k, {**self.sweep.fixed, **p, **(extra or {})}) for k, p in chunk if k in mine]
                if batch:
                    return batch
            return None

        self.drive(take, lambda rows: None)


# ---------------------------------------------------------------------------------------------------
# The sweep directory
# ---------------------------------------------------------------------------------------------------


def prepare(
    sweep: Sweep, spec_text: str, out: Path, resume: bool, force: bool, storage: str | None = None
) -> str:
    """Create the sweep directory and register the study in its database (or reopen both with
    ``resume``); returns what happened, for the user. With ``storage``, the directory holds the outputs
    and the database is elsewhere (checked first, so that nothing is written when it is unusable):
    ``--resume`` on another machine joins the study with a directory of its own."""
    from cosim.outdir import claim, owned_by_tool

    owned = out.is_dir() and owned_by_tool(out, "sweep") and (out / "sweep.yaml").is_file()
    if resume:
        if not owned and not (storage and not out.exists()):
            raise SweepError(f"--resume: {out} holds no sweep this tool wrote; run without --resume first")
        if owned and (out / "sweep.yaml").read_text() != spec_text:
            raise SweepError(
                f"--resume: the sweep file changed since {out} was started; give another --out to run it"
            )
    elif owned and not force:
        raise SweepError(
            f"{out}: holds a sweep already; pass --resume to finish it, or --force to start over"
        )
    if storage:
        _open_study(sweep, spec_text, storage, storage, resume, force)
    if not (resume and owned):
        with claim(out, "sweep", force=force) as target:
            target.commit(lambda d: (d / "sweep.yaml").write_text(spec_text))
    if not storage:
        _open_study(sweep, spec_text, sqlite_url(out / DB), str(out / DB), resume, force)
    return "resumed" if resume else "started"


def _open_study(sweep: Sweep, spec_text: str, url: str, where: str, resume: bool, force: bool) -> None:
    store = Store(url, sweep.name)
    try:
        known = store.spec()
        if resume and known is None:
            raise SweepError(
                f"--resume: {where} holds no sweep named {sweep.name}; run without --resume first"
            )
        if resume and known != spec_text:
            raise SweepError(f"--resume: the sweep file changed since {sweep.name} was started in {where}")
        if not resume and known is not None and not force:
            raise SweepError(
                f"{where}: holds a sweep named {sweep.name} already; pass --resume to join or finish it, "
                "or --force to start over"
            )
        if not resume:
            store.start(spec_text, replace=force)
            if sweep.strategy["kind"] == "optuna" and force:
                from cosim.sweep_search import forget

                forget(sweep, store)
    finally:
        store.close()


def write_outputs(sweep: Sweep, rows: list[dict], out: Path) -> list[dict]:
    """``results.csv``/``results.parquet`` (every point), ``pareto.csv`` (the front of the finished
    screening points that meet the constraints) and, with ``confirm``, ``confirmed.csv`` (each front point's
    objectives in both runs); returns the front."""

    from cosim.outdir import atomic_write_text

    df = table(sweep, rows)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    df.to_parquet(out / "results.parquet.tmp", index=False)
    (out / "results.parquet.tmp").replace(out / "results.parquet")
    ok = [r for r in rows if r["stage"] == "screen" and r["status"] == "done" and r["constraints_met"]]
    front = pareto(ok, sweep.objectives)
    cols = ["key", *sweep.parameters, *sweep.objectives]
    atomic_write_text(out / "pareto.csv", table(sweep, front)[cols].to_csv(index=False))
    if sweep.confirm:
        atomic_write_text(out / "confirmed.csv", confirmed(sweep, rows).to_csv(index=False))
    return front


def write_front_runs(
    sweep: Sweep, front: list[dict], out: Path, progress=None, shared_plotlyjs: bool = False
) -> list[Path]:
    """A run directory per Pareto point, ``out/runs/<key>`` (the files of ``python -m cosim run``, in the
    ``confirm`` mode when the sweep has one), which the sweep report links to. ``shared_plotlyjs``: their
    reports reference ``out/plotly.min.js`` (written here) instead of embedding 4.8 MB each."""
    from cosim.api import load, run

    src = None
    if shared_plotlyjs and front:
        from reports.run_report import PLOTLYJS_FILE, write_plotlyjs

        write_plotlyjs(out)
        src = f"../../{PLOTLYJS_FILE}"
    written = []
    for i, row in enumerate(front):
        params = {k: row[k] for k in sweep.parameters}
        w = load(sweep.base, {**sweep.fixed, **params, **sweep.confirm}, check_memory=False)
        written.append(run(w).write(out / "runs" / row["key"], plotlyjs_src=src))
        if progress:
            progress(i + 1, len(front))
    return written


def table(sweep: Sweep, rows: list[dict]):
    """The points as one table with fixed columns in the sweep file's order (key, stage, parameters,
    status, constraints_met, metrics, error, duration_s), whatever the points' outcomes; a parameter
    with a list or a mapping among its values is written as JSON text in every file."""
    import json

    import pandas as pd

    metrics = sweep.metrics
    cols = ["key", "stage", *sweep.parameters, "status", "constraints_met", *metrics, "error", "duration_s"]
    df = pd.DataFrame(rows, columns=cols)
    for k in sweep.parameters:
        if any(isinstance(v, list | dict) for v in sweep.parameters[k]):
            df[k] = [json.dumps(v) for v in df[k]]
    return df


def confirmed(sweep: Sweep, rows: list[dict]):
    """Per Pareto point, each objective from the screening run and from the confirming run, and their
    relative difference (confirm / screen - 1)."""

    params = list(sweep.parameters)
    df = table(sweep, rows)
    keep = [*params, "status", *sweep.objectives]
    screen = df[df["stage"] == "screen"][["key", *keep]]
    conf = df[df["stage"] == "confirm"][keep]
    both = conf.merge(screen, on=params, suffixes=("_confirm", "_screen"))
    for m in sweep.objectives:
        both[f"{m}_rel_diff"] = both[f"{m}_confirm"] / both[f"{m}_screen"] - 1.0
    return both
