"""Shared fixtures."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from postgres_server import PostgresUnavailable, postgres_server
from tiny_workload import TINY


@pytest.fixture
def tiny_raw() -> dict:
    return copy.deepcopy(TINY)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny tensors: thread hand-off costs more than it saves, and the CPU is shared."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL (psycopg 3 driver) of a throwaway PostgreSQL server, started once per session.

    Skips where the server binaries are absent (Debian: apt-get install postgresql). See postgres_server.py.
    """
    try:
        with postgres_server() as server:
            yield server.url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
