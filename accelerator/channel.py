"""A memory group as the instruction-level machine sees it: one channel shared by several requesters.

Each requester (a core's stream engine, the TAS unit, the replay-cache controller) issues transfers in
order. Under ``round_robin`` arbitration the channel serves the requesters that have a transfer waiting a
burst each in turn, which over a transfer of many bursts is an equal share of the sustained bandwidth
(the fluid limit this model computes exactly: shares change only when a requester starts or stops);
under ``fifo`` it serves one transfer at a time in arrival order. Every transfer is rounded up to whole
bursts and completes ``latency_ns`` after its last burst is served (requests are pipelined, so the latency
does not occupy the channel).
"""

from __future__ import annotations

from collections import deque

import simpy

from accelerator.spec import MemoryGroup
from accelerator.timeline import Timeline

#: A transfer is complete when less than this many bytes remain (floating-point residue of the shares).
_RESIDUE_BYTES = 1e-6


class _Transfer:
    __slots__ = ("remaining", "nbytes", "done", "label", "start", "queue", "args")

    def __init__(
        self, nbytes: float, done: simpy.Event, label: str, start: float, queue: deque, args: dict | None
    ) -> None:
        self.queue = queue
        self.args = args
        self.remaining = nbytes
        self.nbytes = nbytes
        self.done = done
        self.label = label
        self.start = start


class Channel:
    def __init__(self, env: simpy.Environment, name: str, group: MemoryGroup, timeline: Timeline) -> None:
        self.env = env
        self.name = name
        self.timeline = timeline
        self.rate = group.sustained_Bps
        self.latency_s = group.latency_ns * 1e-9
        self.burst = group.burst_bytes
        self.fifo = group.arbitration == "fifo"
        self._queues: dict[object, deque[_Transfer]] = {}  # requester -> its transfers, in order
        self._order: deque[_Transfer] = deque()  # fifo: every transfer in arrival order
        self._heads: list[_Transfer] = []  # the transfers being served now (one per waiting requester)
        self._last = 0.0
        self._generation = 0  # a completion timer of an older generation is stale
        self.bytes_moved = 0.0
        self.busy_s = 0.0

    def transfer(
        self,
        requester,
        nbytes: float,
        done: simpy.Event | None = None,
        label: str = "",
        args: dict | None = None,
    ) -> simpy.Event:
        """Queue ``nbytes`` for ``requester``; ``done`` (created if not given) succeeds when the data is in.
        ``args`` go to the transfer's timeline span."""
        env = self.env
        done = env.event() if done is None else done
        if nbytes <= 0:
            done.succeed()
            return done
        nbytes = -(-nbytes // self.burst) * self.burst
        self.bytes_moved += nbytes
        if self.fifo:
            queue = self._order
        else:
            queue = self._queues.get(requester)
            if queue is None:
                queue = self._queues[requester] = deque()
        t = _Transfer(float(nbytes), done, label, env.now, queue, args)
        if queue:
            queue.append(t)  # behind its requester's earlier transfers: the shares do not change
            return done
        self._advance()
        queue.append(t)
        self._heads.append(t)
        self._schedule()
        return done

    # -- the fluid schedule ------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Serve the bytes of the time since the last change, in equal shares to the waiting requesters."""
        now, last = self.env.now, self._last
        dt = now - last
        self._last = now
        heads = self._heads
        if dt <= 0 or not heads:
            return
        self.busy_s += dt
        if self.timeline.enabled:  # whenever a transfer waits the channel serves at its sustained rate
            self.timeline.counter("memory", f"{self.name} bandwidth", "GB/s", last, now, self.rate / 1e9)
        share = dt * self.rate / len(heads)
        for t in heads:
            t.remaining -= share

    def _schedule(self) -> None:
        heads = self._heads
        if not heads:
            return
        self._generation += 1
        generation = self._generation
        first = min(t.remaining for t in heads) if len(heads) > 1 else heads[0].remaining
        delay = max(first, 0.0) * len(heads) / self.rate
        self.env.timeout(delay).callbacks.append(lambda _e: self._complete(generation))

    def _complete(self, generation: int) -> None:
        if generation != self._generation:
            return  # the set of requesters changed since this timer was set
        self._advance()
        heads = self._heads
        # The transfer this timer was set for ends now whatever rounding left of it; others end with it if
        # only rounding separates them.
        first = min(t.remaining for t in heads)
        for t in list(heads):
            if t.remaining <= max(first, _RESIDUE_BYTES, 1e-9 * t.nbytes):
                queue = t.queue
                queue.popleft()
                self._finish(t)
                heads.remove(t)
                if queue:
                    heads.append(queue[0])
        self._schedule()

    def _finish(self, t: _Transfer) -> None:
        env = self.env
        timeline = self.timeline
        if timeline.enabled:
            args = t.args or {}
            timeline.span(
                "memory", self.name, t.label or "transfer", t.start, env.now, **args, bytes=t.nbytes
            )
            timeline.counter("memory", f"{self.name} transfers", "outstanding", t.start, env.now, 1)
        done = t.done
        # Succeeds ``latency_s`` from now: scheduled the way simpy.Timeout schedules itself, one event.
        done._ok = True  # noqa: SLF001
        done._value = None  # noqa: SLF001
        env.schedule(done, delay=self.latency_s)
