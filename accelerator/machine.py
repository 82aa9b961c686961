"""The instruction-level event model: the compiled stream executed by the machine's SimPy processes.

```
 compiled stream ──> dispatcher ──(DRS: index register, mapping registers, instruction filter)
                         │  bounded queues (hardware.queue_depth); a full queue stalls the dispatcher
       ┌─────────────┬───┴─────────┬──────────────────┐
     core 0   …    core N-1     TAS unit      replay-cache controller
  stream engine ─┐                 │                  │
  (weight_buffers)│                │                  │
     PE tile      │                │                  │
                  └──> memory channels (arbitration, bursts, latency) <──┘
```

The dispatcher walks the stream of each layer of each step in order. Core instructions go to the core
the instruction names, or for filtered instructions to the core in each computing entry's mapping
register (replayed entries dropped); TAS and replay instructions go to their units. DRS waits until the
TAS unit has written every bit of the layer's index register, scans it (``drs_assign_cycles``, the
dispatcher stalls meanwhile) and writes the mapping registers by the dispatch rule. With the layer barrier
on, SYNC holds the dispatcher until the layer has finished everywhere; with it off, instructions wait only
for their inputs: a core's next-layer QKV for the layer outputs of its entries, an entry's MLP for its
attention output (which may be on another core after DRS), a cache write for the output it stores.

Every cycle count comes from ``accelerator.cost``; this module only decides when things happen.
"""

from __future__ import annotations

import numpy as np
import simpy
from tqdm import tqdm

from accelerator.channel import Channel
from accelerator.compiler import StreamOptions, program
from accelerator.cost import PHASES
from accelerator.drs import check_batch, mapping_registers
from accelerator.engines import FIRED, CoreEngine, Engine, Record, Signal, tas_engine
from accelerator.isa import MAPPED, MATRICES, Instr, Op, mask_of
from accelerator.job import SimResult, critical_path, step_ends
from accelerator.timeline import Timeline

QKV, ATTENTION, TAS, DRS, MLP, REPLAY, EXTRA = range(len(PHASES))
_GEMV_PHASE = {"qkv": QKV, "o": ATTENTION, "up": MLP, "down": MLP}


class Countdown:
    """One signal per key, fired when that key's expected number of completions has happened (set up
    front from the compiled stream, so a key cannot fire while its later instructions wait to dispatch)."""

    __slots__ = ("left", "signals")

    def __init__(self, counts) -> None:
        self.left = list(counts)
        self.signals = [FIRED if n == 0 else Signal() for n in self.left]

    def tick(self, key: int) -> None:
        self.left[key] -= 1
        if self.left[key] == 0:
            self.signals[key].fire()


def expected_counts(decoded, batch: int, cores: int) -> dict[str, list[int]]:
    """How many instructions of each kind a layer's stream holds, per core or per entry: what its
    countdowns count to. Read off the compiled stream, so they follow whatever the compiler emits."""
    counts = {"qkv": [0] * cores, "tas": [0] * cores, "o": [0] * batch, "down": [0] * batch}
    for ins, entries in decoded:
        if ins.op == Op.TAS:
            counts["tas"][ins.core] += 1
        elif ins.op == Op.GEMV and MATRICES[ins.matrix] == "qkv":
            counts["qkv"][ins.core] += 1
        elif ins.op == Op.GEMV and MATRICES[ins.matrix] in ("o", "down"):
            for e in entries:
                counts[MATRICES[ins.matrix]][e] += 1
    return counts


class LayerRun:
    """What one layer of one step has produced so far: signals the waiting instructions read."""

    def __init__(self, unit: int, counts: dict[str, list[int]], where: dict | None = None) -> None:
        self.unit = unit  # row of the per-unit result arrays: step * (layers + 1) + layer
        self.where = where or {}  # step, frame and layer (none for a step's extra work): timeline args
        self.outstanding = 0
        self.sync: simpy.Event | None = None
        self.qkv = Countdown(counts["qkv"])  # per core: its QKV instructions
        self.tas = Countdown(counts["tas"])  # per core's static group: its index-register bits are written
        self.bits = Countdown([sum(counts["tas"])])  # every bit of the index register is written
        self.attention = Countdown(counts["o"])  # per entry: its O projection (attention output)
        self.output = Countdown(counts["down"])  # per entry: its layer output (MLP or replay)
        self.index = 0  # the DRS index register: bit e = entry e computes its MLP
        self.synced_at = -1.0  # when the layer's SYNC let the sequencer go on


class Machine:
    def __init__(
        self,
        job,
        timeline_steps: int = 0,
        dispatch: str = "round_robin",
        barrier: bool = True,
        timeline_start: int = 0,
    ):
        cost, hw = job.cost, job.cost.hw
        self.job, self.cost, self.hw = job, cost, hw
        self.dispatch, self.barrier = dispatch, barrier
        self.timeline_steps, self.timeline_start = timeline_steps, timeline_start
        env = self.env = simpy.Environment()
        self.timeline = Timeline()
        self.timeline.enabled = timeline_steps > 0 and timeline_start == 0
        self.channels = {name: Channel(env, name, g, self.timeline) for name, g in hw.memory.items()}
        depth, done = hw.queue_depth, self._done
        self.cores = [
            CoreEngine(env, c, depth, hw.weight_buffers, self.timeline, done) for c in range(hw.cores)
        ]
        self.tas_unit = tas_engine(env, depth, self.timeline, done)
        self.replay_unit = Engine(env, "replay_cache", depth, self.timeline, done)
        if job.drs and job.uses_cache:
            check_batch(job.batch)
        self.static_core = [e % hw.cores for e in range(job.batch)]
        self.units = job.steps * (job.layers + 1)
        # Per row (step, then its layers and its extra work): latest end of each kind of work, bytes moved.
        self._ends = [[-np.inf] * len(PHASES) for _ in range(self.units)]
        self._bytes = [0.0] * self.units
        self.drs_events = self.replay_reads = self.replay_writes = 0
        self.dispatch_stall_s = 0.0
        self._streams: dict = {}
        self.instructions = 0
        self._costs: dict = {}
        self._mappings: dict = {}
        self._issue_s = hw.issue_cycles / hw.clock_Hz
        self._issue_at = 0.0  # when the sequencer issues its next instruction
        self.log: list | None = None  # layer_trace: every record put, with the engine that runs it
        self.engine_ids = {e: i for i, e in enumerate([*self.cores, self.tas_unit, self.replay_unit])}

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _done(self, rec: Record) -> None:
        lay: LayerRun = rec.layer_run
        now = self.env.now
        ends = self._ends[lay.unit]
        if now > ends[rec.phase]:
            ends[rec.phase] = now
        self._bytes[lay.unit] += rec.nbytes
        self.instructions += 1
        if rec.on_done is not None:
            rec.on_done(lay, rec)
        lay.outstanding -= 1
        if lay.outstanding == 0 and lay.sync is not None:
            lay.sync.succeed()
            lay.sync = None

    def _put(self, engine: Engine, rec: Record):
        rec.layer_run.outstanding += 1
        rec.not_before = self._issue_at
        event = engine.submit(rec)
        if event is not None:
            t = self.env.now
            yield event
            self.dispatch_stall_s += self.env.now - t
        if self.log is not None:
            self.log.append(
                {
                    "engine": self.engine_ids[engine],
                    "record": rec,
                    "entered": max(self.env.now, self._issue_at),
                    "entries": rec.entries,
                }
            )

    # -- completion callbacks: the signals later instructions wait for ---------------------------------
    @staticmethod
    def _qkv_done(lay: LayerRun, rec: Record) -> None:
        lay.qkv.tick(rec.core)

    @staticmethod
    def _o_done(lay: LayerRun, rec: Record) -> None:
        for e in rec.entries:
            lay.attention.tick(e)

    @staticmethod
    def _down_done(lay: LayerRun, rec: Record) -> None:
        for e in rec.entries:
            lay.output.tick(e)

    def _replay_read_done(self, lay: LayerRun, rec: Record) -> None:
        for e in rec.entries:
            lay.output.signals[e].fire()
        if self.timeline.enabled:
            self.timeline.counter(
                "units", "replay_cache hits", "entries", self.env.now, None, len(rec.entries)
            )

    def _tas_done(self, lay: LayerRun, rec: Record) -> None:
        lay.index |= rec.bits
        lay.tas.tick(self.static_core[rec.entries[0]])
        lay.bits.tick(0)

    # -- the dispatcher ---------------------------------------------------------------------------------
    def _dispatch(self, progress: bool):
        job, cost = self.job, self.cost
        ctx = cost.attended(job.context()).tolist()
        layers, batch = job.layers, job.batch
        previous = [FIRED] * batch  # layer outputs the next layer's QKV reads
        compute_by_layer = job.compute.transpose(2, 1, 0).tolist()  # [step][layer][entry]
        for s in tqdm(
            range(job.steps), desc="instruction model", unit="step", disable=not progress, leave=False
        ):
            self.timeline.enabled = self.timeline_start <= s < self.timeline_start + self.timeline_steps
            opts = self.options(s)
            stream, tail = program(cost, opts)
            decoded, counts = self._decoded(stream)
            where = {"step": s, "frame": s // job.tokens_per_frame}
            for layer in range(layers):
                lay = LayerRun(s * (layers + 1) + layer, counts, {**where, "layer": layer})
                compute = compute_by_layer[s][layer]
                if not opts.tas:  # decisions known in advance (frame 0, or a schedule-based policy)
                    lay.index = mask_of(e for e in range(batch) if compute[e])
                yield from self._layer(decoded, lay, compute, previous, ctx[s])
                previous = lay.output.signals
            if tail:
                decoded, counts = self._decoded(tail)
                lay = LayerRun(s * (layers + 1) + layers, counts, where)
                yield from self._layer(decoded, lay, None, previous, ctx[s])
        if self._issue_at > self.env.now:  # the last instruction's issue cycle
            yield self.env.timeout(self._issue_at - self.env.now)

    def options(self, step: int) -> StreamOptions:
        """What the compiler is told about decode step ``step``."""
        job = self.job
        return StreamOptions(
            batch=job.batch,
            cores=self.hw.cores,
            shared_weights=self.hw.weights_shared_across_batch,
            tas=bool(job.scores(step)),
            drs=bool(job.schedules(step)),
            cache=job.uses_cache,
            barrier=self.barrier,
        )

    def _decoded(self, stream):
        """The stream with each instruction's entry list unpacked once (the dispatcher's hot loop), and
        what its countdowns count to."""
        key = id(stream)
        if key not in self._streams:
            decoded = [(ins, ins.entries) for ins in stream]
            self._streams[key] = (stream, decoded, expected_counts(decoded, self.job.batch, self.hw.cores))
        return self._streams[key][1:]

    def _cost(self, ins: Instr, ctx: int):
        """The cost model's account of an instruction (per step for ATTN, whose context grows)."""
        key = (ins.op, ins.matrix, ins.block, ctx if ins.op == Op.ATTN else 0)
        c = self._costs.get(key)
        if c is None:
            c = self._costs[key] = self.cost.instruction(ins.op.name, MATRICES[ins.matrix], ins.block, ctx)
        return c

    def _record(self, name: str, phase: int, lay: LayerRun, entries, c, **kw) -> Record:
        """A dispatched instruction on ``entries``, as the cost model's account ``c`` of it says."""
        n = len(entries)
        channel = self.channels[c.group] if c.group else None
        seconds = c.total_cycles(n) / self.hw.clock_Hz
        return Record(name, phase, lay, entries, seconds, c.total_bytes(n), channel, n * c.macs, **kw)

    def _layer(self, stream, lay: LayerRun, compute, previous, ctx: int):
        env, cores = self.env, self.cores
        mapping = self.static_core
        for ins, ins_entries in stream:
            op = ins.op
            if op == Op.GEMV:
                matrix = MATRICES[ins.matrix]
                if ins.filter:
                    yield from self._bits_known(lay, ins_entries)
                c = self._cost(ins, ctx)
                for core, entries in self._route(ins, ins_entries, lay.index, mapping):
                    rec = self._record(f"{matrix}[{ins.block}]", _GEMV_PHASE[matrix], lay, entries, c)
                    rec.core = core
                    if matrix == "qkv":
                        rec.on_done = self._qkv_done
                        if ins.block == 0 and not self.barrier:
                            rec.waits = tuple(previous[e] for e in entries)
                    elif matrix == "o":
                        rec.on_done = self._o_done
                    elif matrix == "up":
                        if ins.block == 0:
                            rec.waits = tuple(lay.attention.signals[e] for e in entries)
                    else:
                        rec.on_done = self._down_done
                    yield from self._put(cores[core], rec)
            elif op == Op.ATTN:
                rec = self._record("attention", ATTENTION, lay, ins_entries, self._cost(ins, ctx))
                yield from self._put(cores[ins.core], rec)
            elif op == Op.TAS:
                # What the unit will write into the index register when it is done (the trace's decisions).
                bits = mask_of(e for e in ins_entries if compute[e])
                rec = self._record(
                    "tas",
                    TAS,
                    lay,
                    ins_entries,
                    self._cost(ins, ctx),
                    waits=(lay.qkv.signals[ins.core],),
                    on_done=self._tas_done,
                )
                rec.bits = bits
                yield from self._put(self.tas_unit, rec)
            elif op == Op.DRS:
                event = lay.bits.signals[0].wait(env)
                if event is not None:
                    yield event
                start = max(env.now, self._issue_at)
                drs_s = self._cost(ins, ctx).total_cycles(len(ins_entries)) / self.hw.clock_Hz
                yield env.timeout(start + drs_s - env.now)
                self.drs_events += 1
                mapping = self._map(lay.index, len(ins_entries))
                self._ends[lay.unit][DRS] = env.now
                if self.timeline.enabled:
                    self.timeline.span(
                        "units",
                        "drs",
                        "drs",
                        start,
                        env.now,
                        **lay.where,
                        computing=lay.index.bit_count(),
                        index=f"{lay.index:#x}",
                    )
            elif op in (Op.REPLAY_RD, Op.REPLAY_WR):
                yield from self._bits_known(lay, ins_entries)
                read = op == Op.REPLAY_RD
                entries = [e for e in ins_entries if bool(lay.index >> e & 1) != read]
                if entries:  # else the controller has nothing to move; the sequencer still issues it
                    yield from self._replay(lay, entries, read, self._cost(ins, ctx))
            elif op == Op.EXTRA:
                waits = () if self.barrier else tuple(previous[e] for e in ins_entries)
                rec = self._record("extra", EXTRA, lay, ins_entries, self._cost(ins, ctx), waits=waits)
                yield from self._put(cores[ins.core], rec)
            elif op == Op.SYNC:
                yield from self._sync(lay)
                lay.synced_at = max(env.now, self._issue_at)
            # The sequencer issues the next instruction issue_cycles later. Rather than waiting that out
            # here (one SimPy event per instruction), it hands records over ahead of their cycle with
            # ``not_before``; engines and stream engines do not act on them earlier, and every wait of
            # the sequencer itself (DRS, SYNC, a full queue, index bits) starts from this clock.
            self._issue_at = max(env.now, self._issue_at) + self._issue_s

    def _replay(self, lay: LayerRun, entries, read: bool, c):
        if read:
            # the read streams the cached outputs in at once, but forms y = h + d: its controller starts
            # once every attention output (h, the O projections) is written, one rule for the three models
            self.replay_reads += len(entries)
            rec = self._record("replay read", REPLAY, lay, entries, c, on_done=self._replay_read_done)
            rec.compute_waits = tuple(lay.attention.signals[e] for e in range(self.job.batch))
        else:
            self.replay_writes += len(entries)
            rec = self._record("replay write", REPLAY, lay, entries, c)
            rec.waits = tuple(lay.output.signals[e] for e in entries)
        yield from self._put(self.replay_unit, rec)

    def _bits_known(self, lay: LayerRun, entries):
        """The filter reads the index-register bits of these entries: wait until the TAS unit wrote them."""
        for c in sorted({self.static_core[e] for e in entries}):
            event = lay.tas.signals[c].wait(self.env)
            if event is not None:
                yield event

    @staticmethod
    def _route(ins: Instr, entries, index: int, mapping):
        """The instruction filter: (core, entries) pairs of a core instruction after dropping replayed
        entries (filtered instructions) and routing each entry to its mapped core (``MAPPED``)."""
        if ins.filter:
            entries = [e for e in entries if index >> e & 1]
            if not entries:
                return []
        if ins.core != MAPPED:
            return [(ins.core, entries)]
        by_core: dict[int, list[int]] = {}
        for e in entries:
            by_core.setdefault(mapping[e], []).append(e)
        return sorted(by_core.items())

    def _map(self, index: int, batch: int) -> list[int]:
        """The mapping registers DRS writes from the index register, by the dispatch rule."""
        if self.dispatch == "round_robin":
            mapping = self._mappings.get(index)
            if mapping is None:
                mapping = self._mappings[index] = mapping_registers(index, batch, self.hw.cores)
            return mapping
        load = [core.backlog_s() for core in self.cores]
        mlp_s = self.cost.mlp_cycles / self.hw.clock_Hz
        mapping = [-1] * batch
        for e in range(batch):
            if index >> e & 1:
                c = min(range(len(load)), key=load.__getitem__)
                mapping[e] = c
                load[c] += mlp_s
        return mapping

    def _sync(self, lay: LayerRun):
        if lay.outstanding > 0:
            lay.sync = self.env.event()
            yield lay.sync

    # -- run --------------------------------------------------------------------------------------------
    def run(self, progress: bool = False):
        self.env.process(self._dispatch(progress))
        self.env.run()
        return self._result()

    def _result(self):
        job = self.job
        layers = job.layers
        phase_s = critical_path(np.array(self._ends), layers)
        layer_bytes = np.array(self._bytes).reshape(job.steps, layers + 1)[:, :layers].sum(axis=0)
        step_busy = np.zeros((job.steps, len(self.cores)))
        for c, core in enumerate(self.cores):  # rows are step-major: row // (layers + 1) is the step
            for row, busy in core.busy_by_row.items():
                step_busy[row // (layers + 1), c] += busy
        return SimResult(
            latency_s=self.env.now,
            layer_phase_s=phase_s,
            layer_bytes=layer_bytes,
            core_busy_s=np.array([c.busy_s for c in self.cores]),
            bytes_by_group={name: ch.bytes_moved for name, ch in self.channels.items()},
            pe_macs=sum(c.macs for c in self.cores),
            tas_macs=self.tas_unit.macs,
            drs_events=self.drs_events,
            replay_reads=self.replay_reads,
            replay_writes=self.replay_writes,
            timeline=self.timeline.to_json() if self.timeline_steps else None,
            machine={
                "granularity": "instruction",
                "instructions": self.instructions,
                "simpy_events": _scheduled_events(self.env),
                "dispatch_stall_s": self.dispatch_stall_s,
                "core_wait_s": [c.wait_s for c in self.cores],
                "channel_busy_s": {n: ch.busy_s for n, ch in self.channels.items()},
            },
            core_step_busy_s=step_busy,
            step_end_s=step_ends(self._ends, job.steps),
        )


def _scheduled_events(env: simpy.Environment) -> int:
    """Events SimPy scheduled (its event-id counter; every timeout, succeed and process step takes one)."""
    return next(env._eid)  # noqa: SLF001 - SimPy keeps no public count


def layer_trace(job, step: int, layer: int, dispatch: str = "round_robin") -> dict:
    """One layer of one decode step on an idle machine, from the sequencer issuing its first instruction
    until its SYNC lets the sequencer go on: its cycles and every record put (engine: cores, then the TAS
    unit, then the replay-cache controller; entries; cycles when it entered its queue, was taken by its
    engine and finished; the index bits a TAS record wrote). What the RTL top level is checked against;
    with the layer barrier every layer starts on an idle machine, so this is its time inside a whole run."""
    m = Machine(job, dispatch=dispatch, barrier=True)
    m.log = []
    opts = m.options(step)
    decoded, counts = m._decoded(program(m.cost, opts)[0])
    lay = LayerRun(0, counts)
    compute = job.compute[:, layer, step].tolist()
    if not opts.tas:
        lay.index = mask_of(e for e in range(job.batch) if compute[e])
    ctx = int(m.cost.attended(job.context()[step]))
    ends: dict[int, float] = {}
    done = m._done

    def on_done(rec):
        ends[id(rec)] = m.env.now
        done(rec)

    for engine in [*m.cores, m.tas_unit, m.replay_unit]:
        engine.done = on_done
    m.env.process(m._layer(decoded, lay, compute, [FIRED] * job.batch, ctx))
    m.env.run()
    hz = m.hw.clock_Hz
    records = [
        {
            "engine": r["engine"],
            "entries": list(r["entries"]),
            "entered": round(r["entered"] * hz),
            "taken": round(r["record"].taken_at * hz),
            "end": round(ends[id(r["record"])] * hz),
            "bits": r["record"].bits,
        }
        for r in m.log
    ]
    return {
        "cycles": round(lay.synced_at * hz),
        "records": records,
        "counts": counts,
        "options": opts,
        "index0": lay.index if not opts.tas else 0,
    }


def layer_cycles(job, step: int, layer: int, dispatch: str = "round_robin") -> int:
    """Cycles of one layer-step on an idle machine (:func:`layer_trace`)."""
    return layer_trace(job, step, layer, dispatch)["cycles"]


def run_instructions(
    job,
    timeline_steps: int = 0,
    progress: bool = False,
    dispatch="round_robin",
    barrier=True,
    timeline_start: int = 0,
):
    return Machine(job, timeline_steps, dispatch, barrier, timeline_start).run(progress)
