"""Self-test of the throwaway PostgreSQL server fixture (tests/postgres_server.py)."""

from __future__ import annotations

import sqlalchemy as sa


def test_postgres_roundtrip(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(postgres_url)
    try:
        meta = sa.MetaData()
        runs = sa.Table(
            "selftest_runs",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(64), nullable=False),
            sa.Column("score", sa.Float, nullable=False),
        )
        with engine.begin() as conn:
            version = conn.execute(sa.text("SELECT version()")).scalar_one()
            assert "PostgreSQL" in version
            meta.create_all(conn)
            conn.execute(runs.insert(), [{"name": "a", "score": 1.5}, {"name": "b", "score": -2.0}])

        # Read back over a different connection (the pool would otherwise hand back the same one).
        engine.dispose()
        with engine.connect() as conn:
            rows = conn.execute(sa.select(runs.c.name, runs.c.score).order_by(runs.c.name)).all()
            assert [tuple(r) for r in rows] == [("a", 1.5), ("b", -2.0)]
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "test"
            assert conn.dialect.driver == "psycopg"
        with engine.begin() as conn:
            runs.drop(conn)
    finally:
        engine.dispose()
