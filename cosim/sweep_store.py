"""The results database of sweeps: one row per point, in SQLite by default (``results.sqlite`` in the
sweep directory) or in any database SQLAlchemy reaches (``--storage postgresql://...``), so that several
machines share one study.

A point is *claimed* (status ``running``, its owner ``host:pid``) in the transaction that hands it to a
worker and *recorded* (``done`` or ``error``) in the transaction that receives its result. A sweep killed
at any moment therefore loses only the points in flight, and ``--resume`` runs exactly those again: the
claims of processes on this host that are no longer alive, and claims older than ``STALE_CLAIM_S`` from
other hosts. Finished points are never run twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from cosim.errors import InputError
from cosim.outdir import pid_alive

#: A claim from another host older than this is taken over by ``--resume`` (its machine is presumed gone).
STALE_CLAIM_S = 3600.0

_meta = sa.MetaData()
STUDIES = sa.Table(
    "cosim_sweeps",
    _meta,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  #: the sweep file's text: a resume must run the same sweep
    sa.Column("created", sa.Float, nullable=False),
)
POINTS = sa.Table(
    "cosim_points",
    _meta,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),  #: hash of the point's resolved workload
    sa.Column("stage", sa.String(16), nullable=False),  #: screen, or confirm (re-run in another mode)
    sa.Column("params", sa.Text, nullable=False),  #: JSON: the swept keys' values
    sa.Column("status", sa.String(16), nullable=False),  #: running, done, error
    sa.Column("values_json", sa.Text),  #: JSON: metric -> value
    sa.Column("constraints_met", sa.Boolean),
    sa.Column("error", sa.Text),
    sa.Column("duration_s", sa.Float),
    sa.Column("version", sa.String(40)),
    sa.Column("owner", sa.String(200)),  #: host:pid of the process that claimed or recorded it
    sa.Column("updated", sa.Float, nullable=False),
)


class StorageError(InputError):
    """A ``--storage`` URL that cannot be used."""


def engine_url(storage: str) -> str:
    """SQLAlchemy's URL for ``storage``: ``postgresql://`` goes through psycopg 3, the driver installed."""
    if storage.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + storage.split("://", 1)[1]
    return storage


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Store:
    """The points of one study (a sweep's name) in one database."""

    def __init__(self, storage: str, study: str) -> None:
        self.url, self.study, self.owner = engine_url(storage), study, _owner()
        try:
            self.engine = sa.create_engine(self.url)
            with self.engine.begin() as c:
                _meta.create_all(c)
        except Exception as exc:  # the driver's own message says what (host, password, file)
            raise StorageError(f"--storage: cannot open {storage}: {str(exc).splitlines()[0]}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- the study ---------------------------------------------------------------------------------------

    def spec(self) -> str | None:
        with self.engine.connect() as c:
            return c.execute(sa.select(STUDIES.c.spec).where(STUDIES.c.study == self.study)).scalar()

    def start(self, spec: str, replace: bool) -> None:
        """Register the study; ``replace`` forgets an earlier study of the same name (``--force``)."""
        with self.engine.begin() as c:
            if replace:
                c.execute(sa.delete(POINTS).where(POINTS.c.study == self.study))
                c.execute(sa.delete(STUDIES).where(STUDIES.c.study == self.study))
            c.execute(sa.insert(STUDIES).values(study=self.study, spec=spec, created=time.time()))

    # -- points ------------------------------------------------------------------------------------------

    def finished(self) -> set[str]:
        with self.engine.connect() as c:
            q = sa.select(POINTS.c.key).where(
                POINTS.c.study == self.study, POINTS.c.status.in_(("done", "error"))
            )
            return set(c.execute(q).scalars())

    def claim(self, points: dict[str, tuple[str, dict]]) -> list[str]:
        """Claim the points (key -> (stage, params)) that nobody finished or holds; returns the keys this
        process now owns, in the order given."""
        now, mine = time.time(), []
        with self.engine.begin() as c:
            rows = {
                r.key: r
                for r in c.execute(
                    sa.select(POINTS.c.key, POINTS.c.status, POINTS.c.owner, POINTS.c.updated).where(
                        POINTS.c.study == self.study, POINTS.c.key.in_(list(points))
                    )
                )
            }
            new = [k for k in points if k not in rows]
            if new:
                c.execute(
                    sa.insert(POINTS),
                    [
                        dict(
                            study=self.study,
                            key=k,
                            stage=points[k][0],
                            params=json.dumps(points[k][1], sort_keys=True),
                            status="running",
                            owner=self.owner,
                            updated=now,
                        )
                        for k in new
                    ],
                )
            for k, r in rows.items():
                if r.status == "running" and self.abandoned(r.owner, r.updated, now):
                    took = c.execute(
                        sa.update(POINTS)
                        .where(POINTS.c.study == self.study, POINTS.c.key == k, POINTS.c.owner == r.owner)
                        .values(owner=self.owner, updated=now)
                    ).rowcount
                    if took:
                        new.append(k)
            mine = [k for k in points if k in set(new)]
        return mine

    def abandoned(self, owner: str, updated: float, now: float) -> bool:
        """Whether a claim's process is gone: checked directly on this host, presumed after
        ``STALE_CLAIM_S`` on another."""
        host, _, pid = owner.rpartition(":")
        if owner == self.owner:
            return False
        if host == self.owner.rpartition(":")[0] and pid.isdigit():
            return not pid_alive(int(pid))
        return now - updated > STALE_CLAIM_S

    def record(self, results: Iterable[dict]) -> None:
        """Store finished points (one transaction: a kill loses none of them or all)."""
        now = time.time()
        with self.engine.begin() as c:
            for r in results:
                c.execute(
                    sa.update(POINTS)
                    .where(POINTS.c.study == self.study, POINTS.c.key == r["key"])
                    .values(
                        status=r["status"],
                        values_json=json.dumps(r["values"]) if r["values"] is not None else None,
                        constraints_met=r["constraints_met"],
                        error=r["error"],
                        duration_s=r["duration_s"],
                        version=r["version"],
                        owner=self.owner,
                        updated=now,
                    )
                )

    def values(self, keys: Iterable[str]) -> dict[str, dict | None]:
        """Finished points' metrics (None for a point that failed)."""
        keys = list(keys)
        with self.engine.connect() as c:
            q = sa.select(POINTS.c.key, POINTS.c.status, POINTS.c.values_json).where(
                POINTS.c.study == self.study,
                POINTS.c.key.in_(keys),
                POINTS.c.status.in_(("done", "error")),
            )
            return {k: (json.loads(v) if s == "done" else None) for k, s, v in c.execute(q)}

    def rows(self) -> list[dict]:
        """Every finished point, flat: key, stage, the parameters, status, constraints_met, the metrics,
        error, duration_s (ordered by stage then key, so output files do not depend on timing)."""
        out = []
        with self.engine.connect() as c:
            q = (
                sa.select(POINTS)
                .where(POINTS.c.study == self.study, POINTS.c.status.in_(("done", "error")))
                .order_by(POINTS.c.stage.desc(), POINTS.c.key)
            )
            for r in c.execute(q):
                row = {"key": r.key, "stage": r.stage, **json.loads(r.params), "status": r.status}
                row["constraints_met"] = bool(r.constraints_met)
                row.update(json.loads(r.values_json) if r.values_json else {})
                row.update(error=r.error or "", duration_s=r.duration_s)
                out.append(row)
        return out
