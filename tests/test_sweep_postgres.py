"""Sweeps whose database is a real PostgreSQL server (tests/postgres_server.py starts one): two processes
share one study without running a point twice, and an Optuna search keeps its study there."""

import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa
from test_sweep import write_sweep

from cosim.sweep_store import POINTS


def points_in(url: str, study: str) -> dict:
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table(POINTS.name):  # the first process has not created it yet
            return {}
        with engine.connect() as c:
            q = sa.select(POINTS.c.key, POINTS.c.status, POINTS.c.owner).where(POINTS.c.study == study)
            return {k: (s, o) for k, s, o in c.execute(q)}
    finally:
        engine.dispose()


def launch(path, out, url, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cosim",
            "sweep",
            str(path),
            "--out",
            str(out),
            "--storage",
            url,
            "--quiet",
            *extra,
        ],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_machines_share_one_study_and_run_each_point_once(tmp_path, postgres_url):
    name = f"shared_{uuid.uuid4().hex[:8]}"
    params = {"hardware.cores": [1, 2, 3, 4], "policy.target_replay_ratio": [0.2, 0.4, 0.6]}
    path = write_sweep(tmp_path, name=name, fixed={"simulation.mode": "event"}, parameters=params)
    first = launch(path, tmp_path / "a", postgres_url)
    # the second joins once the first has registered the study and claimed work

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None and not points_in(postgres_url, name):
        time.sleep(0.05)
    second = launch(path, tmp_path / "b", postgres_url, "--resume")
    outs = [p.communicate(timeout=300) for p in (first, second)]
    for p, (_, stderr) in zip((first, second), outs, strict=True):
        assert p.returncode == 0, stderr
    ran = [int(stdout.split(" points run")[0].rsplit(" ", 1)[1]) for stdout, _ in outs]
    assert sum(ran) == 12  # every point ran exactly once, on one of the two
    rows = points_in(postgres_url, name)
    assert len(rows) == 12 and {s for s, _ in rows.values()} == {"done"}
    # both wrote the whole study's results
    for d in ("a", "b"):
        assert len((tmp_path / d / "results.csv").read_text().splitlines()) == 13


def test_an_optuna_search_keeps_its_study_in_postgresql(tmp_path, postgres_url):
    import optuna

    name = f"search_{uuid.uuid4().hex[:8]}"
    strategy = {"kind": "optuna", "sampler": "nsga2", "trials": 10, "seed": 3, "population": 4}
    path = write_sweep(tmp_path, name=name, strategy=strategy)
    p = launch(path, tmp_path / "out", postgres_url)
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 10
    keys = {t.user_attrs["key"] for t in study.trials}
    assert keys == set(points_in(postgres_url, name))


def test_an_unreachable_database_is_exit_2(tmp_path):
    pytest.importorskip("psycopg")
    path = write_sweep(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "sweep", str(path), "--out", str(tmp_path / "out"),
         "--storage", "postgresql://nobody@127.0.0.1:9/none"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "--storage: cannot open postgresql://nobody@127.0.0.1:9/none" in r.stderr
    assert "Traceback" not in r.stderr
