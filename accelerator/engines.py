"""The processes of the instruction-level machine: cores, their weight-stream engines, the TAS unit and the
replay-cache controller, connected by bounded instruction queues, signals and memory channels.

Each engine takes instructions from its own queue in order. The queue holds ``hardware.queue_depth``
instructions; the dispatcher waits when it is full (back-pressure). An instruction leaves the queue when its
engine takes it, then waits for its inputs (signals of the instructions that produce them) and operands.
"""

from __future__ import annotations

from collections import deque

import simpy

from accelerator.timeline import Timeline


class Signal:
    """A one-shot condition; the event to wait on is created only if someone waits before it fires."""

    __slots__ = ("fired", "_event")

    def __init__(self) -> None:
        self.fired = False
        self._event: simpy.Event | None = None

    def wait(self, env: simpy.Environment) -> simpy.Event | None:
        if self.fired:
            return None
        if self._event is None:
            self._event = env.event()
        return self._event

    def fire(self) -> None:
        self.fired = True
        if self._event is not None:
            self._event.succeed()


FIRED = Signal()
FIRED.fired = True


class Record:
    """One dispatched instruction as an engine runs it."""

    __slots__ = (
        "name",
        "phase",
        "layer_run",
        "entries",
        "seconds",
        "nbytes",
        "channel",
        "macs",
        "waits",
        "compute_waits",
        "loaded",
        "on_done",
        "core",
        "bits",
        "taken_at",
        "not_before",
        "queued_at",
    )

    def __init__(
        self,
        name,
        phase,
        layer_run,
        entries,
        seconds,
        nbytes=0.0,
        channel=None,
        macs=0.0,
        waits=(),
        on_done=None,
    ) -> None:
        self.name = name
        self.phase = phase
        self.layer_run = layer_run
        self.entries = entries
        self.seconds = seconds
        self.nbytes = nbytes
        self.channel = channel
        self.macs = macs
        self.waits = waits
        self.compute_waits = ()  # inputs its compute needs but its transfer does not (a replay read's h)
        self.loaded: simpy.Event | None = None
        self.on_done = on_done
        self.core = -1
        self.bits = 0  # TAS: the index-register bits it writes when done
        self.taken_at = 0.0  # when its engine took it from the queue
        self.not_before = 0.0  # when the sequencer issues it (it may be handed over earlier)
        self.queued_at = 0.0  # when it entered its engine's queue

    def args(self) -> dict:
        """The args of its timeline spans: where in the decode it is and the batch entries it serves."""
        where = self.layer_run.where if self.layer_run is not None else {}  # None: a bare engine's test
        return {**where, "entries": list(self.entries)}


class InstructionQueue:
    """A bounded FIFO with one consumer. ``put`` returns None when there was room, else an event that
    succeeds once the item is in; ``get`` returns an item, or None after arming ``ready`` to wait on.
    ``entered(item)`` is called when an item is in the queue (not while its producer waits for room)."""

    def __init__(self, env: simpy.Environment, depth: int, entered) -> None:
        self.env = env
        self.depth = depth
        self.entered = entered
        self.items: deque = deque()
        self._putters: deque = deque()
        self.ready: simpy.Event | None = None

    def put(self, item) -> simpy.Event | None:
        if len(self.items) < self.depth:
            self.items.append(item)
            self.entered(item)
            if self.ready is not None:
                ready, self.ready = self.ready, None
                ready.succeed()
            return None
        event = self.env.event()
        self._putters.append((event, item))
        return event

    def get(self):
        if not self.items:
            self.ready = self.env.event()
            return None
        item = self.items.popleft()
        if self._putters:
            event, waiting = self._putters.popleft()
            self.items.append(waiting)
            self.entered(waiting)
            event.succeed()
        return item


class Engine:
    """An in-order engine: take an instruction, wait for its inputs, run it, report it done."""

    track = "units"

    def __init__(self, env: simpy.Environment, name: str, depth: int, timeline: Timeline, done) -> None:
        self.env = env
        self.name = name
        self.queue = InstructionQueue(env, depth, self._entered)
        self.timeline = timeline
        self.done = done  # machine callback: the record finished
        self.busy_s = 0.0
        self.macs = 0.0
        self.wait_s = 0.0  # time an instruction in the issue slot waited for inputs or operands
        self.pending_s = 0.0  # work queued but not started (the least_loaded dispatch rule reads it)
        self.busy_until = 0.0
        env.process(self._run())

    def submit(self, record: Record) -> simpy.Event | None:
        return self.queue.put(record)

    def _entered(self, record: Record) -> None:
        """The record is in this engine's queue: it counts as queued work from now on."""
        self.pending_s += record.seconds
        record.queued_at = self.env.now

    def backlog_s(self) -> float:
        return self.pending_s + max(self.busy_until - self.env.now, 0.0)

    def _run(self):
        env, queue = self.env, self.queue
        while True:
            rec = queue.get()
            if rec is None:
                yield queue.ready
                continue
            if self.timeline.enabled:
                self.timeline.counter(
                    self.track, f"{self.name} queue", "instructions", rec.queued_at, env.now, 1
                )
            if rec.not_before > env.now:  # handed over ahead of its issue cycle: it is not there yet
                yield env.timeout(rec.not_before - env.now)
            arrived = rec.taken_at = env.now
            for signal in rec.waits:
                event = signal.wait(env)
                if event is not None:
                    yield event
            yield from self._operands(rec)
            self.wait_s += env.now - arrived
            self.pending_s -= rec.seconds
            start = env.now
            self.busy_until = start + rec.seconds
            yield from self._execute(rec)
            self.busy_s += rec.seconds
            self.macs += rec.macs
            if self.timeline.enabled:
                self.timeline.span(self.track, self.name, rec.name, start, env.now, **rec.args())
            self._finished(rec)
            self.done(rec)

    def _operands(self, rec: Record):
        return iter(())

    def _args(self, rec: Record) -> dict | None:
        """What the timeline says of a transfer for ``rec`` (None while it does not record)."""
        return rec.args() if self.timeline.enabled else None

    def _execute(self, rec: Record):
        """Compute for ``rec.seconds`` while its transfer (if any) runs; end when both are done."""
        transfer = None
        if rec.channel is not None and rec.nbytes > 0:
            transfer = rec.channel.transfer(self, rec.nbytes, label=rec.name, args=self._args(rec))
        for signal in rec.compute_waits:
            event = signal.wait(self.env)
            if event is not None:
                yield event
        yield self.env.timeout(rec.seconds)
        if transfer is not None and not transfer.processed:
            yield transfer

    def _finished(self, rec: Record) -> None:
        pass


class StreamEngine(Engine):
    """An engine with a stream engine in front: it fetches the operands of queued instructions in order,
    as far ahead as its ``buffers`` allow; an instruction runs once its operand is in a buffer and frees
    the buffer when it ends. The stream engine acts on two events only (an instruction queued, a buffer
    freed), so it is driven from those rather than run as a process of its own."""

    def __init__(self, env, name: str, depth: int, buffers: int, timeline: Timeline, done) -> None:
        super().__init__(env, name, depth, timeline, done)
        self.free_buffers = buffers
        self._fetch: deque[Record] = deque()

    def _entered(self, record: Record) -> None:
        """Once in the queue (not before), the stream engine may fetch the record's operand."""
        super()._entered(record)
        if record.channel is not None:
            record.loaded = self.env.event()
            self._fetch.append(record)
            self._stream()

    def _stream(self) -> None:
        """Issue the next operand fetches that have a free buffer, in order (a record handed over ahead of
        its issue cycle is fetched from that cycle on)."""
        env = self.env
        while self._fetch and self.free_buffers:
            rec = self._fetch.popleft()
            self.free_buffers -= 1
            wait = rec.not_before - env.now
            if wait > 0:
                env.timeout(wait).callbacks.append(
                    lambda _e, rec=rec: rec.channel.transfer(
                        self, rec.nbytes, rec.loaded, rec.name, self._args(rec)
                    )
                )
            else:
                rec.channel.transfer(self, rec.nbytes, rec.loaded, rec.name, self._args(rec))

    def _operands(self, rec: Record):
        if rec.loaded is not None and not rec.loaded.processed:
            yield rec.loaded

    def _execute(self, rec: Record):
        yield self.env.timeout(rec.seconds)

    def _finished(self, rec: Record) -> None:
        if rec.loaded is not None:
            self.free_buffers += 1
            self._stream()


class CoreEngine(StreamEngine):
    """A PE tile and its weight-stream engine: the operands are weight blocks and entries' keys and
    values, ``weight_buffers`` of them."""

    track = "cores"

    def __init__(self, env, index: int, depth: int, buffers: int, timeline: Timeline, done) -> None:
        super().__init__(env, f"core{index}", depth, buffers, timeline, done)
        self.index = index
        self.busy_by_row: dict[int, float] = {}  # busy time per row (a layer or a step's extra work)

    def _finished(self, rec: Record) -> None:
        super()._finished(rec)
        if rec.layer_run is not None:  # a record of the machine's stream (tests drive engines bare)
            row = rec.layer_run.unit
            self.busy_by_row[row] = self.busy_by_row.get(row, 0.0) + rec.seconds


def tas_engine(env, depth: int, timeline: Timeline, done) -> StreamEngine:
    """The TAS unit fetches each record's aligned keys as the record enters its queue (a key buffer for
    every record it can hold), so the keys are in by the time the record's queries are."""
    return StreamEngine(env, "tas", depth, depth + 1, timeline, done)
