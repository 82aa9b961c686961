"""A compute core: a PE array that runs one phase of work at a time for the batch entries mapped to it.

Compute and the phase's memory transfers overlap (double-buffered streaming), so a phase ends when the
slower of the two ends; transfers contend with other cores in the memory servers.
"""

from __future__ import annotations

from typing import NamedTuple

import simpy

from accelerator.cost import CostModel, Demand
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline


class Task(NamedTuple):
    """A demand turned into what the event loop needs: seconds of compute and transfers per server."""

    compute_s: float
    transfers: tuple[tuple[MemoryServer, float], ...]
    macs: float


def plan(cost: CostModel, memory: dict[str, MemoryServer], demand: Demand) -> Task:
    transfers = tuple((memory[g], float(b)) for g, b in demand.bytes.items() if float(b) > 0)
    return Task(float(cost.seconds(demand.cycles)), transfers, float(demand.macs))


class Core:
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        cost: CostModel,
        memory: dict[str, MemoryServer],
        timeline: Timeline,
    ) -> None:
        self.env = env
        self.index = index
        self.name = f"core{index}"
        self.cost = cost
        self.memory = memory
        self.timeline = timeline
        self.free_at = 0.0
        self.busy_s = 0.0
        self.macs = 0.0

    def execute(self, phase: str, task: Task | Demand, entries: int) -> float:
        """Start a phase when the core is free; return when its compute and transfers are done."""
        if isinstance(task, Demand):
            task = plan(self.cost, self.memory, task)
        start = max(self.env.now, self.free_at)
        end = start + task.compute_s
        for server, nbytes in task.transfers:
            end = max(end, server.reserve(nbytes, start, phase))
        self.busy_s += task.compute_s
        self.macs += task.macs
        self.free_at = end
        if self.timeline.enabled:
            self.timeline.span("cores", self.name, phase, start, end, entries=entries)
        return end
