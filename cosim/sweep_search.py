"""Multi-objective search over a sweep's grid with Optuna (NSGA-II or TPE), through the ask-and-tell
interface so that the points run on the sweep's executors and land in its results database.

The search proposes points of the grid the sweep file describes: an ordered numeric parameter is an
integer index into its sorted values (so samplers see its order), any other a categorical choice. The
Optuna study lives in the same database as the points (Optuna's RDB storage), so machines sharing a
PostgreSQL ``--storage`` share one search. A point the search proposes again is told its recorded result,
not run twice; a trial left running by a process that died is told its point's result if it was recorded,
and failed otherwise, when the search resumes (as is a trial whose process died before it claimed a
point).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import TYPE_CHECKING

from cosim.config import WorkloadError

if TYPE_CHECKING:
    from cosim.sweep import Runner, Sweep

SAMPLERS = ("nsga2", "tpe")


class Space:
    """The sweep's parameters as Optuna distributions, and back."""

    def __init__(self, parameters: dict[str, list]) -> None:
        import optuna.distributions as d

        self.values, self.distributions = {}, {}
        for k, vs in parameters.items():
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vs)
            self.values[k] = sorted(set(vs)) if numeric else list(vs)
            n = len(self.values[k])
            self.distributions[k] = (
                d.IntDistribution(0, n - 1)
                if numeric and n > 1
                else d.CategoricalDistribution(list(range(n)))
            )

    def decode(self, params: dict) -> dict:
        return {k: self.values[k][int(i)] for k, i in params.items()}


def _sampler(sweep: Sweep):
    import optuna

    s = sweep.strategy
    if s["sampler"] == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.get("population", 20), seed=s["seed"])
    return optuna.samplers.TPESampler(seed=s["seed"])


def _study(sweep: Sweep, url: str, load: bool = True):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize" if d == "min" else "maximize" for d in sweep.objectives.values()]
    return optuna.create_study(
        storage=optuna.storages.RDBStorage(url),
        study_name=sweep.name,
        directions=directions,
        sampler=_sampler(sweep),
        load_if_exists=load,
    )


def forget(sweep: Sweep, store) -> None:
    """Delete the search's Optuna study (``--force`` starts the sweep over)."""
    import optuna

    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=sweep.name, storage=optuna.storages.RDBStorage(store.url))


def search(sweep: Sweep, runner: Runner) -> None:
    """Run trials until the study holds ``strategy.trials`` finished ones."""
    from optuna.trial import Trial, TrialState

    from cosim.api import load
    from cosim.sweep import point_key, violations

    store = runner.store
    study = _study(sweep, store.url)
    space = Space(sweep.parameters)

    def tell(trial: Trial, values: dict | None) -> None:
        # skip_if_finished: a resuming process may have failed a trial this one had just asked for
        if values is None:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return
        for name, v in zip(sweep.constraints, violations(values, sweep.constraints), strict=True):
            trial.set_constraint(name, v)  # both samplers keep to the feasible points where they can
        study.tell(trial, [values[m] for m in sweep.objectives], skip_if_finished=True)

    # trials a dead process left running: their point's result if it was recorded, else a failure
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")  # none: its process died between asking and claiming
        if owner is None or store.abandoned(owner, t.datetime_start.timestamp(), now):
            key = t.user_attrs.get("key")
            tell(Trial(study, t._trial_id), store.values([key]).get(key) if key else None)
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
    budget = max(0, sweep.strategy["trials"] - finished)
    runner.skipped += len(store.finished())  # points, as a grid counts them
    asked = 0
    waiting: dict[str, list[Trial]] = {}  # point key -> trials told when its result comes

    def take() -> list | None:
        nonlocal asked
        while asked < budget:
            trial = study.ask(space.distributions)
            asked += 1
            params = space.decode(trial.params)
            trial.set_user_attr("owner", store.owner)
            try:
                key = point_key(load(sweep.base, {**sweep.fixed, **params}, check_memory=False))
            except WorkloadError as exc:
                key = "invalid-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
                runner.fail(key, params, str(exc))
                tell(trial, None)
                continue
            trial.set_user_attr("key", key)
            known = store.values([key])
            if key in known:  # proposed again: its result is known
                tell(trial, known[key])
                continue
            if key in waiting:  # proposed again while it runs
                waiting[key].append(trial)
                continue
            if not store.claim({key: ("screen", params)}):  # another machine runs it right now
                tell(trial, None)
                continue
            waiting[key] = [trial]
            runner.total += 1
            return [(key, {**sweep.fixed, **params})]
        return None

    def on_result(rows: list[dict]) -> None:
        for r in rows:
            for trial in waiting.pop(r["key"]):
                tell(trial, r["values"])

    runner.drive(take, on_result)
