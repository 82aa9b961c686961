"""The event model at phase granularity: the fast path of the instruction-level machine.

Per layer, each core runs one task per phase of the compiled stream (its QKV blocks, then its entries'
attention and O, then its MLP blocks), the TAS unit one task per core once that core's QKV is done, DRS
once every bit is in, and the replay-cache controller reads at DRS and writes after the MLPs. A task's
transfers overlap its compute (ideal streaming: no buffer limit, no access latency) and memory groups are
FIFO bandwidth servers, so tasks of different cores contend. The cycle counts are the instruction
stream's, summed per phase (``accelerator.cost``).

The machine is idle at every layer boundary (the layer barrier: every task of a layer ends before the next
layer starts), so a layer's schedule depends only on the attended context and how many entries compute
on each core. Each distinct layer is scheduled once and its times and counts are reused: on the paper
workload about 11 distinct layers per step with FastCar and one per step for the dense baseline.
"""

from __future__ import annotations

import numpy as np
import simpy
from tqdm import tqdm

from accelerator.core import Core
from accelerator.cost import PHASES, static_core_counts
from accelerator.drs import DrsScheduler
from accelerator.job import DecodeJob, SimResult, critical_path, step_ends
from accelerator.memory import MemoryServer
from accelerator.replay_cache import ReplayCacheController
from accelerator.tas_unit import TasUnit
from accelerator.timeline import Timeline
from accelerator.unit import plan

QKV, ATTENTION, TAS, DRS, MLP, REPLAY, EXTRA = range(len(PHASES))


class _Layers:
    """Schedules one layer (or a step's extra work) on units that start idle at ``t0``."""

    def __init__(self, job: DecodeJob, timeline: Timeline) -> None:
        cost, hw = job.cost, job.cost.hw
        self.job, self.cost = job, cost
        env = simpy.Environment()  # the components' clock; layers are scheduled by explicit ready times
        self.memory = {name: MemoryServer(env, name, g, timeline) for name, g in hw.memory.items()}
        self.cores = [Core(env, c, cost, self.memory, timeline) for c in range(hw.cores)]
        self.tas_unit = TasUnit(env, cost, self.memory, timeline)
        self.cache = ReplayCacheController(env, cost, self.memory, timeline)
        self.drs = DrsScheduler(cost, job.batch, hw.cores) if job.drs and job.uses_cache else None
        self.timeline = timeline
        self.static_n = static_core_counts(np.ones(job.batch, dtype=bool), hw.cores).tolist()
        self._tasks: dict = {}
        self._fronts: dict = {}
        self.units = (*self.cores, self.tas_unit, self.cache)
        self._mlp = [plan(cost, self.memory, cost.mlp(n)) for n in range(job.batch + 1)]
        self._counted = (
            [(c, "busy_s") for c in self.cores]
            + [(c, "macs") for c in self.cores]
            + [(self.tas_unit, "macs"), (self.cache, "reads"), (self.cache, "writes")]
            + [(m, "bytes_moved") for m in self.memory.values()]
        )

    def task(self, key, demand_fn):
        t = self._tasks.get(key)
        if t is None:
            t = self._tasks[key] = plan(self.cost, self.memory, demand_fn())
        return t

    def counters(self) -> list[float]:
        """Everything a layer adds to the result, as one vector (so a reused layer adds it in one step):
        per core busy time, then per core MACs, TAS MACs, cache reads and writes, bytes per memory group."""
        return [getattr(obj, name) for obj, name in self._counted]

    def restore(self, values: list[float]) -> None:
        """Set the :meth:`counters` back (after a schedule made only for the timeline's spans)."""
        for (obj, name), v in zip(self._counted, values, strict=True):
            setattr(obj, name, v)

    def add(self, delta: list[float]) -> None:
        """Add a vector of :meth:`counters` differences back into the units (a reused part of a layer)."""
        for (obj, name), d in zip(self._counted, delta, strict=True):
            setattr(obj, name, getattr(obj, name) + d)

    def _reset(self, t0: float) -> None:
        for u in self.units:
            u.free_at = t0
        for m in self.memory.values():
            m.free_at = t0

    def layer(self, t0: float, ctx: int, mlp_n: tuple, k: int, scored: bool, schedules: bool) -> list[float]:
        """Ends of each kind of work of one layer that starts at ``t0`` on an idle machine."""
        batch = self.job.batch
        ends, attn_end, bits = self._front(t0, ctx, scored)
        ready = bits
        if schedules:
            ready = ends[DRS] = bits + self.drs.seconds
            if self.timeline.enabled:
                self.timeline.span("units", "drs", "drs", bits, ready, computing=k)
        # Entries that DRS moved need every core's attention output; statically each core needs its own.
        mlp, attention = self._mlp, ends[ATTENTION]
        mlp_end = [
            core.run(mlp[n], max(ready, attention if schedules else attn_end[c]), "mlp", entries=n)
            for c, (core, n) in enumerate(zip(self.cores, mlp_n, strict=True))
        ]
        ends[MLP] = max(mlp_end)
        if self.job.uses_cache:
            # Reads once the bits (and the mapping) are known, their controller once every attention
            # output is written (a read forms y = h + d); each write after the MLPs it stores. After DRS one
            # instruction each for every entry; statically one per core's group, in core order.
            if schedules:
                end = self.cache.submit(batch - k, 0, ready, attention) if batch > k else ready
            else:
                end = ready
                for n_static, n in zip(self.static_n, mlp_n, strict=True):
                    if n_static > n:
                        end = self.cache.submit(n_static - n, 0, ready, attention)
            if schedules:
                end = max(self.cache.submit(0, k, ends[MLP]), end)
            else:
                for n, t in zip(mlp_n, mlp_end, strict=True):
                    end = max(self.cache.submit(0, n, t), end)
            ends[REPLAY] = end
        return ends

    def _front(self, t0: float, ctx: int, scored: bool):
        """QKV, attention and TAS of a layer: the same for every layer of a step, so scheduled once per
        (context, scored) and replayed by restoring the units' state and adding its counts."""
        key = (ctx, scored)
        front = None if self.timeline.enabled else self._fronts.get(key)
        units = (*self.units, *self.memory.values())
        if front is not None:
            ends, attn_end, bits, free_at, delta = front
            for u, f in zip(units, free_at, strict=True):
                u.free_at = t0 + f
            self.add(delta)
            return [t0 + e for e in ends], [t0 + e for e in attn_end], t0 + bits
        before = self.counters()
        self._reset(t0)
        cost = self.cost
        ends = [-np.inf] * len(PHASES)
        pairs = list(zip(self.cores, self.static_n, strict=True))  # every core's QKV first, as dispatched
        qkv_end = [
            core.run(self.task(("qkv", n), lambda n=n: cost.qkv(n)), t0, "qkv", entries=n)
            for core, n in pairs
        ]
        attn_end = [
            core.run(
                self.task(("attention", n, ctx), lambda n=n: cost.attention(n, ctx)),
                t0,
                "attention",
                entries=n,
            )
            for core, n in pairs
        ]
        ends[QKV], ends[ATTENTION] = max(qkv_end), max(attn_end)
        bits = t0
        if scored:
            bits = max(self.tas_unit.submit(n, qkv_end[c]) for c, n in enumerate(self.static_n))
            ends[TAS] = bits
        delta = [after - was for was, after in zip(before, self.counters(), strict=True)]
        if self.timeline.enabled:  # kept only from time 0, so that no result depends on the window
            return ends, attn_end, bits
        self._fronts[key] = (
            [e - t0 for e in ends],
            [e - t0 for e in attn_end],
            bits - t0,
            [u.free_at - t0 for u in units],
            delta,
        )
        return ends, attn_end, bits

    def extra(self, t0: float) -> list[float]:
        self._reset(t0)
        ends = [-np.inf] * len(PHASES)
        ends[EXTRA] = max(
            core.run(self.task(("extra", n), lambda n=n: self.cost.extra(n)), t0, "extra", entries=n)
            for core, n in zip(self.cores, self.static_n, strict=True)
        )
        return ends


def run_event(
    job: DecodeJob, timeline_steps: int = 0, progress: bool = False, timeline_start: int = 0
) -> SimResult:
    """The event model at phase granularity; the timeline records ``timeline_steps`` decode steps from
    ``timeline_start`` at their absolute times."""
    cost, hw = job.cost, job.cost.hw
    timeline = Timeline()
    sched = _Layers(job, timeline)
    layers, steps = job.layers, job.steps
    attended = np.asarray(cost.attended(job.context())).tolist()
    batch, cores = job.batch, hw.cores
    computing = job.compute.sum(axis=0)  # (layers, steps)
    # A static layer is known by its entries computing per core, coded base batch + 1.
    radix = (batch + 1) ** np.arange(cores)
    static_code = np.tensordot(radix, static_core_counts(job.compute, cores), axes=1)
    drs_mlp = {k: tuple(sched.drs.schedule(k).tolist()) for k in range(batch + 1)} if sched.drs else None
    rows = steps * (layers + 1)
    has_extra = bool(cost.extra_cycles)

    distinct: dict = {}  # layer key -> index into shapes
    shapes: list[tuple[list[float], list[float]]] = []  # (ends relative to the start, counters added)
    duration: list[float] = []
    row_shape = np.full(rows, -1, dtype=np.int64)
    t0 = 0.0  # kept only while the timeline records (spans need absolute times)

    def shape_of(key: tuple, schedule_fn) -> int:
        """Index of the layer shape ``key``, scheduling it from time 0 if new (so a shape's times do not
        depend on where the timeline's window lies), and again at ``t0`` for the timeline's spans."""
        index = distinct.get(key)
        if index is None:
            recording, timeline.enabled = timeline.enabled, False
            before = sched.counters()
            rel = schedule_fn(0.0)
            index = distinct[key] = len(shapes)
            shapes.append((rel, [after - was for was, after in zip(before, sched.counters(), strict=True)]))
            duration.append(max(0.0, *rel))
            timeline.enabled = recording
        if timeline.enabled:  # the spans only: the counters stay as the shapes' deltas left them
            counted = sched.counters()
            schedule_fn(t0)
            sched.restore(counted)
        return index

    def layer_shape(a: int, code: int, scored: bool, schedules: bool) -> int:
        if schedules:
            mlp_n, k = drs_mlp[code], code
        else:
            mlp_n = tuple(code // (batch + 1) ** c % (batch + 1) for c in range(cores))
            k = sum(mlp_n)
        return shape_of(
            (a, code, scored, schedules), lambda t: sched.layer(t, a, mlp_n, k, scored, schedules)
        )

    scored_steps = np.broadcast_to(job.scores(np.arange(steps)), steps).tolist()
    scheduled_steps = np.broadcast_to(job.schedules(np.arange(steps)), steps).tolist()
    drs_codes, static_codes = computing.T.tolist(), static_code.T.tolist()  # [step][layer]
    for s in tqdm(range(steps), desc="event model", unit="step", disable=not progress, leave=False):
        recording = timeline.enabled = timeline_start <= s < timeline_start + timeline_steps
        scored, schedules = scored_steps[s], scheduled_steps[s]
        a = attended[s]
        codes = drs_codes[s] if schedules else static_codes[s]
        first = s * (layers + 1)
        if recording and s == timeline_start:  # the window's absolute start: every row before it
            done = row_shape[:first]
            t0 = float(np.asarray(duration)[done[done >= 0]].sum()) if first else 0.0
        if recording:  # in order, each at its absolute start
            for layer, code in enumerate(codes):
                timeline.context = {"step": s, "frame": s // job.tokens_per_frame, "layer": layer}
                row_shape[first + layer] = index = layer_shape(a, code, scored, schedules)
                t0 += duration[index]
            timeline.context = {"step": s, "frame": s // job.tokens_per_frame}
        else:  # each distinct layer of the step once
            of_code = {code: layer_shape(a, code, scored, schedules) for code in dict.fromkeys(codes)}
            row_shape[first : first + layers] = [of_code[code] for code in codes]
        if has_extra:
            row_shape[first + layers] = index = shape_of(("extra",), sched.extra)
            if recording:
                t0 += duration[index]

    rel = np.array([s[0] for s in shapes]).reshape(len(shapes), len(PHASES))
    added = np.array([s[1] for s in shapes])
    used = row_shape >= 0
    durations = np.array(duration)
    starts = np.zeros(rows)
    starts[used] = np.concatenate([[0.0], np.cumsum(durations[row_shape[used]])[:-1]])
    ends = np.full((rows, len(PHASES)), -np.inf)
    ends[used] = starts[used, None] + rel[row_shape[used]]
    counts = np.bincount(row_shape[used], minlength=len(shapes))
    total = counts @ added
    layer_bytes = np.zeros(layers)
    c = hw.cores  # counters: busy per core, MACs per core, TAS MACs, reads, writes, bytes per group
    per_shape_bytes = added[:, 2 * c + 3 :].sum(axis=1)
    layer_rows = used & (np.arange(rows) % (layers + 1) < layers)
    np.add.at(layer_bytes, np.arange(rows)[layer_rows] % (layers + 1), per_shape_bytes[row_shape[layer_rows]])
    scheduled_count = sum(scheduled_steps)
    step_busy = np.zeros((steps, hw.cores))
    np.add.at(step_busy, np.flatnonzero(used) // (layers + 1), added[row_shape[used], : hw.cores])
    return SimResult(
        latency_s=float(starts[used][-1] + durations[row_shape[used][-1]]) if used.any() else 0.0,
        layer_phase_s=critical_path(ends, layers),
        layer_bytes=layer_bytes,
        core_busy_s=total[:c],
        bytes_by_group={name: float(v) for name, v in zip(hw.memory, total[2 * c + 3 :], strict=True)},
        pe_macs=float(total[c : 2 * c].sum()),
        tas_macs=float(total[2 * c]),
        drs_events=scheduled_count * layers if sched.drs else 0,
        replay_reads=int(round(total[2 * c + 1])),
        replay_writes=int(round(total[2 * c + 2])),
        timeline=timeline.to_json() if timeline_steps else None,
        machine={"granularity": "phase", "distinct_layers": len(shapes), "layers_scheduled": int(used.sum())},
        core_step_busy_s=step_busy,
        step_end_s=step_ends(ends, steps),
    )
