"""What every block of the phase model has in common: it runs one task at a time, in arrival order.

A task is a cost-model demand planned for the phase model: seconds of compute and bytes per memory server.
Its transfers overlap its compute (ideal streaming), so the task ends when the later of the two ends. The
instruction-level machine's engines (``accelerator.engines``) are the same blocks with real queues,
buffers and channels.
"""

from __future__ import annotations

from typing import NamedTuple

import simpy

from accelerator.cost import CostModel, Demand
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline


class Task(NamedTuple):
    compute_s: float
    transfers: tuple[tuple[MemoryServer, float], ...]
    macs: float


def plan(cost: CostModel, memory: dict[str, MemoryServer], demand: Demand) -> Task:
    transfers = tuple((memory[g], float(b)) for g, b in demand.bytes.items() if float(b) > 0)
    return Task(float(cost.seconds(demand.cycles)), transfers, float(demand.macs))


class Unit:
    track = "units"  # the timeline process this block's track lives in

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        cost: CostModel,
        memory: dict[str, MemoryServer],
        timeline: Timeline,
    ) -> None:
        self.env = env
        self.name = name
        self.cost = cost
        self.memory = memory
        self.timeline = timeline
        self.free_at = 0.0
        self.busy_s = 0.0
        self.macs = 0.0
        self._plans: dict = {}

    def planned(self, key, demand_fn) -> Task:
        """The task for ``key``, planned from ``demand_fn()`` the first time only."""
        task = self._plans.get(key)
        if task is None:
            task = self._plans[key] = plan(self.cost, self.memory, demand_fn())
        return task

    def run(self, task: Task, ready_s: float, label: str, compute_ready_s: float = 0.0, **args) -> float:
        """Start ``task`` when it is ready and the unit is free; return when it ends. Its compute waits
        also for ``compute_ready_s`` (inputs only the compute needs), its transfers do not."""
        start = max(ready_s, self.free_at)
        end = max(start, compute_ready_s) + task.compute_s
        for server, nbytes in task.transfers:
            end = max(end, server.reserve(nbytes, start, label))
        self.busy_s += task.compute_s
        self.macs += task.macs
        self.free_at = end
        if self.timeline.enabled:
            self.timeline.span(self.track, self.name, label, start, end, **args)
            # ready but behind the unit's earlier tasks (the unit takes them in arrival order)
            self.timeline.counter(self.track, f"{self.name} queue", "tasks", ready_s, start, 1)
        return end
