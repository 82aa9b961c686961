"""Optuna searches, the Dask executor, the results database's claims and the confirmation of the Pareto
front (cosim/sweep_search.py, sweep_exec.py, sweep_store.py)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import cosim, finished, killed_midway, write_sweep

from cosim.sweep import DB, load_sweep, pareto, prepare, run_sweep, write_outputs
from cosim.sweep_store import STALE_CLAIM_S, Store, sqlite_url

#: A grid small enough that a 30-trial search visits every point (6 of them).
SMALL = {"hardware.cores": [1, 2], "policy.target_replay_ratio": [0.25, 0.5, 0.75]}


def optuna_sweep(tmp_path: Path, sampler: str, trials: int = 30, **over) -> Path:
    strategy = {"kind": "optuna", "sampler": sampler, "trials": trials, "seed": 7, "population": 4}
    return write_sweep(tmp_path, parameters=over.pop("parameters", SMALL), strategy=strategy, **over)


def brute_front(res: pd.DataFrame) -> set[str]:
    ok = res[(res["status"] == "done") & res["constraints_met"]]
    return {r["key"] for r in pareto(ok.to_dict("records"), {"latency_s": "min", "energy_j": "min"})}


def run_local(path: Path, out: Path, **kw) -> dict:
    sweep, text = load_sweep(path)
    prepare(sweep, text, out, resume=False, force=False, storage=kw.get("storage"))
    result = run_sweep(sweep, out, **kw)
    write_outputs(sweep, result["rows"], out)
    return result


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_an_optuna_search_runs_its_trials_and_finds_the_grids_front(tmp_path, sampler):
    (tmp_path / "g").mkdir()
    grid = run_local(write_sweep(tmp_path / "g", parameters=SMALL), tmp_path / "g" / "out")
    path = optuna_sweep(tmp_path, sampler)
    r = cosim("sweep", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import optuna

    study = optuna.load_study(study_name="tiny", storage=sqlite_url(tmp_path / "out" / DB))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 30 and len(states) == 30
    res = pd.read_csv(tmp_path / "out" / "results.csv")
    # 30 proposals over 6 points: each distinct point ran once, the repeats were told its recorded result
    assert len(res) == res["key"].nunique() == 6
    assert f"{len(res)} points run" in r.stdout
    # every trial's objectives are its point's recorded metrics
    by_key = res.set_index("key")
    for t in study.trials:
        row = by_key.loc[t.user_attrs["key"]]
        assert t.values == [row["latency_s"], row["energy_j"]]
        assert (t.constraints["replay_ratio"] <= 0) == bool(row["constraints_met"])
    front = set(pd.read_csv(tmp_path / "out" / "pareto.csv")["key"])
    # the front of the search's points, and of the whole grid run point by point
    assert front == brute_front(res) == brute_front(pd.DataFrame(grid["rows"])) and front


def test_an_optuna_search_is_reproducible_with_its_seed(tmp_path):
    params = {"hardware.cores": [1, 2, 3, 4], "hardware.lanes_per_core": {"range": [16, 128, 16]}}
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        path = optuna_sweep(tmp_path / name, "nsga2", trials=12, parameters=params, constraints={})
        run_local(path, tmp_path / name / "out")
        runs.append(pd.read_csv(tmp_path / name / "out" / "results.csv").drop(columns="duration_s"))
    pd.testing.assert_frame_equal(*runs)
    assert len(runs[0]) >= 6  # the search explored (32 points in the grid)


def test_a_killed_search_resumes_to_its_trial_count_without_rerunning_a_point(tmp_path):
    params = {"hardware.cores": [1, 2, 3, 4], "policy.target_replay_ratio": [0.2, 0.4, 0.6]}
    path = optuna_sweep(tmp_path, "tpe", trials=14, parameters=params, fixed={"simulation.mode": "event"})
    out = tmp_path / "out"
    before = killed_midway(path, out)
    r = cosim("sweep", path, "--out", out, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    after = finished(out / DB)
    assert all(after[k] == v for k, v in before.items())  # kept as they were, not run again
    import optuna

    study = optuna.load_study(study_name="tiny", storage=sqlite_url(out / DB))
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")]
    assert len(done) == 14 and not [t for t in study.trials if t.state.name == "RUNNING"]
    # a trial is failed only if its point was in flight when the process died
    assert sum(t.state.name == "FAIL" for t in study.trials) <= 1
    runs = int(r.stdout.split(" points run")[0].rsplit(" ", 1)[1])
    assert runs == len(after) - len(before)


def test_a_dask_cluster_gives_the_local_results(tmp_path):
    from distributed import LocalCluster

    params = {"hardware.cores": [1, 2], "policy.target_replay_ratio": [0.25, 0.5, 0.75]}
    path = write_sweep(tmp_path, parameters=params, fixed={"simulation.mode": "event"})
    local = run_local(path, tmp_path / "local", jobs=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_local(path, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert remote["ran"] == local["ran"] == 6

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "duration_s"} for r in rows]

    assert strip(remote["rows"]) == strip(local["rows"])


def test_no_scheduler_at_the_address_is_exit_2(tmp_path):
    path = write_sweep(tmp_path)
    r = cosim("sweep", path, "--out", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9", cwd=tmp_path)
    assert r.returncode == 2 and "--scheduler: no Dask scheduler at tcp://127.0.0.1:9" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_claims_keep_points_to_one_process_until_it_is_gone(tmp_path):
    url = sqlite_url(tmp_path / "db.sqlite")
    a, b = Store(url, "s"), Store(url, "s")
    b.owner = "otherhost:1"
    points = {k: ("screen", {"x": i}) for i, k in enumerate("pqr")}
    assert a.claim(points) == ["p", "q", "r"]
    assert b.claim(points) == []  # held by a live process
    a.record([{"key": "p", "status": "done", "values": {"m": 1.0}, "constraints_met": True, "error": "",
               "duration_s": 0.1, "version": "t"}])  # fmt: skip
    # a process of this host that died: its claims go to the next claimant, finished points never do
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    c = Store(url, "s")
    a.owner = f"{c.owner.rsplit(':', 1)[0]}:{dead.stdout.strip()}"
    with a.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cosim_points SET owner = ? WHERE status = 'running'", (a.owner,))
    assert c.claim(points) == ["q", "r"]
    # another host's claim is taken over only once it is stale
    assert b.claim(points) == []
    with c.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cosim_points SET updated = updated - ?", (STALE_CLAIM_S + 1,))
    assert b.claim(points) == ["q", "r"]
    assert set(a.finished()) == {"p"} and a.values(["p", "q"]) == {"p": {"m": 1.0}}


def test_confirm_reruns_the_front_in_the_event_model(tmp_path):
    # at phase granularity the event model equals the analytic one on this compute-bound workload (to the
    # last digit), so the confirmation runs the instruction-level machine, which does differ
    path = write_sweep(
        tmp_path, confirm={"simulation.mode": "event", "simulation.granularity": "instruction"}
    )
    result = run_local(path, tmp_path / "out")
    rows = pd.DataFrame(result["rows"])
    front = set(pd.read_csv(tmp_path / "out" / "pareto.csv")["key"])
    conf = pd.read_csv(tmp_path / "out" / "confirmed.csv")
    assert len(conf) == len(front) == (rows["stage"] == "confirm").sum() and front
    assert set(conf["key"]) == front  # the screening key of each confirmed point
    # the instruction-level machine's numbers differ from the analytic ones, by 2-10% on this workload
    assert (conf["latency_s_rel_diff"].abs() < 0.2).all() and (conf["latency_s_rel_diff"].abs() > 0.01).all()
