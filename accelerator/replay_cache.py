"""The replay cache: the previous frame's MLP output for every (layer, spatial position).

Functional view: a ring buffer of one frame of outputs per layer; position i of frame t reads the entry
written by position i of frame t-1 and then overwrites it. Event view: a controller whose port moves one
output per ``cost.replay_transfer_cycles`` and whose bytes go to the memory group holding the cache.
"""

from __future__ import annotations

import numpy as np
import simpy

from accelerator.cost import CostModel
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline
from accelerator.unit import Unit


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


class ReplayCacheController(Unit):
    def __init__(
        self, env: simpy.Environment, cost: CostModel, memory: dict[str, MemoryServer], timeline: Timeline
    ):
        super().__init__(env, "replay_cache", cost, memory, timeline)
        self.reads = 0
        self.writes = 0

    def submit(self, reads: int, writes: int, ready_s: float, compute_ready_s: float = 0.0) -> float:
        """Fetch ``reads`` replayed outputs and store ``writes`` fresh ones; return when the port is done.
        The controller starts at ``compute_ready_s`` at the earliest (a read forms y = h + d)."""
        if reads + writes <= 0:
            return ready_s
        self.reads += reads
        self.writes += writes
        task = self.planned((reads, writes), lambda: self.cost.replay(reads, writes))
        end = self.run(task, ready_s, "replay", compute_ready_s, reads=reads, writes=writes)
        if self.timeline.enabled:
            self.timeline.counter(self.track, f"{self.name} hits", "entries", end, None, reads)
        return end
