"""A memory group as a FIFO bandwidth server.

Transfers are striped across all channels of the group, so the group serves one transfer at a time at
its sustained bandwidth; a transfer issued while the group is busy queues behind the earlier ones. This is
where cores contend: two cores streaming weights from one group take twice as long as one.
"""

from __future__ import annotations

import simpy

from accelerator.spec import MemoryGroup
from accelerator.timeline import Timeline


class MemoryServer:
    def __init__(self, env: simpy.Environment, name: str, group: MemoryGroup, timeline: Timeline) -> None:
        self.env = env
        self.name = name
        self.group = group
        self.timeline = timeline
        self.free_at = 0.0
        self.bytes_moved = 0.0
        self.busy_s = 0.0
        self._Bps = group.sustained_Bps

    def reserve(self, nbytes: float, ready_s: float | None = None, label: str = "") -> float:
        """Queue a transfer that may start at ``ready_s`` (default now); return when it completes."""
        ready = self.env.now if ready_s is None else ready_s
        if nbytes <= 0:
            return ready
        start = max(ready, self.free_at)
        duration = nbytes / self._Bps
        self.free_at = start + duration
        self.bytes_moved += nbytes
        self.busy_s += duration
        timeline = self.timeline
        if timeline.enabled:
            timeline.span("memory", self.name, label or "transfer", start, self.free_at, bytes=nbytes)
            # the group moves one transfer at a time at its sustained rate; the others wait for it
            timeline.counter("memory", f"{self.name} bandwidth", "GB/s", start, self.free_at, self._Bps / 1e9)
            timeline.counter("memory", f"{self.name} transfers", "outstanding", ready, self.free_at, 1)
        return self.free_at
