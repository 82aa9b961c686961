"""A compute core: a PE array that runs one phase of work at a time for the batch entries mapped to it.

Its transfers contend with the other cores' in the memory servers.
"""

from __future__ import annotations

import simpy

from accelerator.cost import CostModel, Demand
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline
from accelerator.unit import Task, Unit, plan


class Core(Unit):
    track = "cores"

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        cost: CostModel,
        memory: dict[str, MemoryServer],
        timeline: Timeline,
    ) -> None:
        super().__init__(env, f"core{index}", cost, memory, timeline)
        self.index = index

    def execute(self, phase: str, task: Task | Demand, entries: int) -> float:
        """Run a phase for ``entries`` entries as soon as the core is free; return when it is done."""
        if isinstance(task, Demand):
            task = plan(self.cost, self.memory, task)
        return self.run(task, self.env.now, phase, entries=entries)
