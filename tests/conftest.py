"""Shared fixtures."""

from __future__ import annotations

import copy

import pytest
from tiny_workload import TINY


@pytest.fixture
def tiny_raw() -> dict:
    return copy.deepcopy(TINY)
