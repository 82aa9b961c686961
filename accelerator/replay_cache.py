"""The replay cache: the previous frame's MLP output for every (layer, spatial position).

Functional view: a ring buffer of one frame of outputs per layer; position i of frame t reads the entry
written by position i of frame t-1 and then overwrites it. Event view: a controller whose port moves one
output per ``cost.replay_transfer_cycles`` and whose bytes go to the memory group holding the cache.
"""

from __future__ import annotations

import numpy as np
import simpy

from accelerator.core import Task, plan
from accelerator.cost import CostModel
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline


def cache_address(
    layer: int, position: int, tokens_per_frame: int, words_per_entry: int, base: int = 0
) -> int:
    """Word address of the cached output of (layer, position): one frame of positions per layer."""
    return base + (layer * tokens_per_frame + position) * words_per_entry


class ReplayCacheModel:
    """Functional reference: stores real vectors, so replay returns what was last written."""

    def __init__(self, layers: int, tokens_per_frame: int, hidden: int) -> None:
        self.data = np.zeros((layers, tokens_per_frame, hidden), dtype=np.float32)
        self.valid = np.zeros((layers, tokens_per_frame), dtype=bool)

    def read(self, layer: int, position: int) -> np.ndarray:
        if not self.valid[layer, position]:
            raise LookupError(f"no cached output for layer {layer}, position {position}")
        return self.data[layer, position]

    def write(self, layer: int, position: int, value: np.ndarray) -> None:
        self.data[layer, position] = value
        self.valid[layer, position] = True


class ReplayCacheController:
    def __init__(
        self, env: simpy.Environment, cost: CostModel, memory: dict[str, MemoryServer], timeline: Timeline
    ):
        self.env = env
        self.cost = cost
        self.memory = memory
        self.timeline = timeline
        self.free_at = 0.0
        self.reads = 0
        self.writes = 0
        self._tasks: dict[tuple[int, int], Task] = {}

    def submit(self, reads: int, writes: int, ready_s: float) -> float:
        if reads + writes <= 0:
            return ready_s
        task = self._tasks.get((reads, writes))
        if task is None:
            task = self._tasks[(reads, writes)] = plan(
                self.cost, self.memory, self.cost.replay(reads, writes)
            )
        start = max(ready_s, self.free_at)
        end = start + task.compute_s
        for server, nbytes in task.transfers:
            end = max(end, server.reserve(nbytes, start, "replay_cache"))
        self.reads += reads
        self.writes += writes
        self.free_at = end
        if self.timeline.enabled:
            self.timeline.span("units", "replay_cache", "replay", start, end, reads=reads, writes=writes)
        return end
