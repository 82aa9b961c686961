"""Shared fixtures."""

from __future__ import annotations

import copy

import pytest
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
