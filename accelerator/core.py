"""A compute core: a PE array that runs one phase of work at a time for the batch entries mapped to it.

Compute and the phase's memory transfers overlap (double-buffered streaming), so a phase ends when the
slower of the two ends; transfers contend with other cores in the memory servers.
"""

from __future__ import annotations

import simpy

from accelerator.cost import CostModel, Demand
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline


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

    def execute(self, phase: str, demand: Demand, entries: int) -> float:
        """Start a phase when the core is free; return when its compute and transfers are done."""
        start = max(self.env.now, self.free_at)
        compute_s = float(self.cost.seconds(demand.cycles))
        end = start + compute_s
        for group, nbytes in demand.bytes.items():
            end = max(end, self.memory[group].reserve(float(nbytes), start, f"{self.name}.{phase}"))
        self.busy_s += compute_s
        self.macs += float(demand.macs)
        self.free_at = end
        self.timeline.span("cores", self.name, phase, start, end, entries=entries)
        return end
