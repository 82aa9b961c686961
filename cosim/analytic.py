"""The analytic model: the phase model's schedule in closed form, vectorised over layers and steps.

Each phase takes the roofline of the whole chip: the slowest core's compute, or each memory group's total
bytes at its sustained bandwidth, whichever is longer. It shares every number with the event model through
the cost model; it differs only where the phase model's order matters (docs/cost_model.md, "How far apart
the executions are"): a FIFO memory group carrying transfers over from one phase into the next, a core
that finishes QKV early starting the TAS unit early, and compute and transfers of different phases
overlapping within a core.

For speed (a design-space sweep runs it hundreds of times) it does the same arithmetic on less data,
with the same numbers as a result, bit for bit:

* the attention side (QKV, attention, the TAS unit, DRS) depends on the decode step only (the context
  length, the static batch-to-core groups), so it is computed on (cores, 1, steps) and broadcast over
  the layers;
* what depends on a core's entry count alone (its MLP, a replay-cache instruction) is computed once per
  count, 0 to batch, and looked up;
* the byte totals (sums over layers and steps) are still taken over arrays of the original shape and
  layout, because numpy's pairwise summation rounds differently on other shapes; sums over cores add
  core after core on any shape.
"""

from __future__ import annotations

import functools

import numpy as np

from accelerator.cost import (
    PHASES,
    CostModel,
    Demand,
    add_bytes,
    count_true,
    drs_counts,
    static_core_counts,
)
from accelerator.job import DecodeJob, SimResult, charge_phases, step_ends


def memory_seconds(cost: CostModel, demand: Demand) -> np.ndarray:
    """Time of (cores, ...) demands' transfers: each group moves every core's bytes at its bandwidth."""
    t = 0.0
    for group, nbytes in demand.bytes.items():
        t = np.maximum(t, cost.transfer_seconds(group, np.sum(nbytes, axis=0)))
    return t


def chip_seconds(cost: CostModel, demand: Demand) -> np.ndarray:
    """Phase time of (cores, ...) demands: max over cores of compute, max over groups of summed bytes."""
    return np.maximum(np.max(cost.seconds(demand.cycles), axis=0), memory_seconds(cost, demand))


def _full(x, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` broadcast to ``shape`` in memory: sums over it then round as over an array computed there."""
    return np.ascontiguousarray(np.broadcast_to(x, shape))


def _total(x, shape: tuple[int, ...], axis=None):
    """The sum of ``x`` broadcast to ``shape``: integers (exact in any order) without the copy."""
    x = np.asarray(x)
    return (np.broadcast_to(x, shape) if x.dtype.kind in "biu" else _full(x, shape)).sum(axis=axis)


def _widened(d: Demand, shape: tuple[int, ...]) -> Demand:
    """A step-only demand's bytes at the full shape, for the byte totals."""
    return Demand(d.cycles, {g: _full(b, shape) for g, b in d.bytes.items()}, d.macs)


def _by_count(demand: Demand, n: np.ndarray) -> Demand:
    """Look up, at each element of ``n``, a demand computed once per entry count (0 to batch)."""

    def pick(v):
        return np.take(v, n) if np.ndim(v) else v

    return Demand(pick(demand.cycles), {g: pick(b) for g, b in demand.bytes.items()}, pick(demand.macs))


def _sum(demand: Demand, into: dict[str, float]) -> None:
    for group, nbytes in demand.bytes.items():
        into[group] = into.get(group, 0.0) + float(np.sum(nbytes))


def _steps(mask: np.ndarray) -> slice | np.ndarray | None:
    """The steps where ``mask`` (steps,) holds, None if none: a slice when they are consecutive (DRS
    schedules from frame 1 on), so that taking them copies nothing."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return None
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] + 1 == len(idx) else idx


def _core_counts(active: np.ndarray, k: np.ndarray, scheduling: np.ndarray, cores: int) -> np.ndarray:
    """Entries each core runs per (layer, step): round-robin over the ``k`` computing entries where DRS
    schedules, the static batch-to-core mapping elsewhere (each worked out only where it applies)."""
    out = np.empty((cores,) + k.shape, dtype=np.int64)
    drs, static = _steps(scheduling[0]), _steps(~scheduling[0])
    if drs is not None:
        out[..., drs] = np.take(drs_counts(np.arange(len(active) + 1), cores), k[:, drs], axis=1)
    if static is not None:
        out[..., static] = static_core_counts(active[..., static], cores)
    return out


def run_analytic(job: DecodeJob) -> SimResult:
    cost, cores, layers, steps = job.cost, job.cores, job.layers, job.steps
    shape, full = (layers, steps), (cores, layers, steps)

    # The attention side, per step (1, steps) or per core and step (cores, 1, steps).
    step = np.arange(steps)[None, :]
    scored, scheduling = job.scores(step), job.schedules(step)
    static_n = static_core_counts(np.ones(job.batch, dtype=bool), cores)[:, None, None] * np.ones(
        (1, 1, steps), dtype=np.int64
    )
    ctx = job.context()[None, None, :]
    qkv = cost.qkv(static_n)
    attn = cost.attention(static_n, ctx)
    both = Demand(qkv.cycles + attn.cycles, add_bytes(qkv.bytes, attn.bytes), qkv.macs + attn.macs)
    t_qkv = chip_seconds(cost, qkv)
    t_attn = chip_seconds(cost, both)
    per_group = cost.tas(np.where(scored, static_n, 0))  # one TAS instruction per core's static group
    tas = Demand(
        per_group.cycles.sum(axis=0),
        {g: b.sum(axis=0) for g, b in per_group.bytes.items()},
        per_group.macs.sum(axis=0),
    )
    t_bits = np.where(scored, t_qkv + cost.roofline_seconds(tas), 0.0)  # every index-register bit written
    t_drs = t_bits + np.where(scheduling, cost.seconds(cost.drs(job.batch).cycles), 0.0)
    t_ready = np.maximum(t_attn, t_drs)  # an MLP needs its entry's attention output and its mapping

    # The MLP side, per core, layer and step.
    active = job.compute  # (batch, layers, steps)
    k = count_true(active)  # computing entries per (layer, step)
    per_core = _core_counts(active, k, scheduling, cores)
    mlp_table = cost.mlp(np.arange(job.batch + 1))
    mlp = _by_count(mlp_table, per_core)
    # After DRS an MLP may run on another core than its attention, so it waits for every core; under the
    # static mapping each core needs only its own attention and the index bits. A core's attention ends
    # with its compute or, at the latest, when the chip's QKV and attention transfers are in (the
    # roofline does not say which core's bytes arrive first, so it takes the last).
    core_attn = np.maximum(cost.seconds(both.cycles), memory_seconds(cost, both))
    ready_core = np.where(scheduling[None], t_ready[None], np.maximum(core_attn, t_drs[None]))
    mlp_end = ready_core + np.take(cost.seconds(mlp_table.cycles), per_core)
    t_mlp = np.maximum(np.max(mlp_end, axis=0), t_ready + memory_seconds(cost, mlp))
    if job.uses_cache:
        t_end, cache = _replay_cache(job, k, per_core, static_n, scheduling, t_attn, t_drs, t_mlp, mlp_end)
    else:
        cache = Demand(0.0, {}, 0.0)
        t_end = t_mlp

    # Milestones as the event model records them; the critical path is charged in execution order.
    milestones = [
        t_qkv,
        t_attn,
        np.where(scored, t_bits, -np.inf),
        np.where(scheduling, t_drs, -np.inf),
        t_mlp,
        np.where(job.uses_cache, t_end, -np.inf),
    ]
    layer_time = np.broadcast_to(functools.reduce(np.maximum, milestones), shape)  # (layers, steps)
    extra = cost.extra(static_n[:, 0, 0])
    step_extra = float(chip_seconds(cost, extra)) if cost.extra_cycles else 0.0
    starts = np.concatenate(
        [
            [0.0],
            np.cumsum(np.concatenate([layer_time.T, np.full((steps, 1), step_extra)], axis=1).ravel())[:-1],
        ]
    ).reshape(steps, layers + 1)
    ends = np.empty((len(PHASES), steps, layers + 1))  # by kind of work, rows in execution order
    for p, t in enumerate(milestones):
        if len(t) == 1 and np.all(t == -np.inf):  # per step only, and a kind of work no step does
            ends[p, :, :layers] = -np.inf
        else:
            ends[p, :, :layers] = starts[:, :layers] + t.T
    ends[len(milestones) :, :, :layers] = -np.inf
    ends[:, :, layers] = -np.inf
    if step_extra:
        ends[PHASES.index("extra"), :, layers] = starts[:, layers] + step_extra
    phase_s = charge_phases(ends.reshape(len(PHASES), -1), layers)

    both, tas = _widened(both, full), _widened(tas, shape)
    bytes_by_group: dict[str, float] = {g: 0.0 for g in cost.hw.memory}
    for d in (both, tas, mlp, cache):
        _sum(d, bytes_by_group)
    layer_bytes = sum(_layer_bytes(d) for d in (both, tas, mlp, cache))
    step_busy = (  # (cores, steps) cycles: integers, so their sum over the steps is exact in any order
        _total(both.cycles, full, axis=1) + mlp.cycles.sum(axis=1) + np.asarray(extra.cycles)[:, None]
    )
    return SimResult(
        latency_s=float(phase_s.sum()),
        layer_phase_s=phase_s,
        layer_bytes=layer_bytes,
        core_busy_s=cost.seconds(step_busy.sum(axis=1)).astype(float),
        bytes_by_group=bytes_by_group,
        pe_macs=float(_total(both.macs, full) + np.sum(mlp.macs) + steps * np.sum(extra.macs)),
        tas_macs=float(_total(tas.macs, shape)),
        drs_events=int(_total(scheduling, shape)),
        replay_reads=int(np.sum(np.where(job.uses_cache, job.batch - k, 0))),
        replay_writes=int(np.sum(np.where(job.uses_cache, k, 0))),
        core_step_busy_s=cost.seconds(step_busy).astype(float).T,
        step_end_s=step_ends(ends.transpose(1, 2, 0), steps),
    )


def _replay_cache(job: DecodeJob, k, per_core, static_n, scheduling, t_attn, t_drs, t_mlp, mlp_end):
    """When each layer's replay-cache work ends, and its bytes. Reads start once the mapping is known and
    every attention output is written (a read forms y = h + d); writes follow the MLPs whose outputs they
    store. After DRS one instruction each for every entry; statically one per core's group, in core
    order. Instruction times are looked up by entry count; each mapping is worked out on its steps only."""
    cost, counts = job.cost, np.arange(job.batch + 1)
    reads, writes = cost.replay(counts, 0), cost.replay(0, counts)  # by the entries read or written
    read_memory = cost.roofline_seconds(Demand(0.0, reads.bytes))
    read_compute, write_s = cost.seconds(reads.cycles), cost.roofline_seconds(writes)

    def read_end(n, ready, s):
        """``n`` entries read: the transfer from ``ready``, the controller from the attention outputs on
        (``s``: the steps)."""
        controller = np.maximum(ready, t_attn[:, s]) + np.take(read_compute, n)
        return np.maximum(ready + np.take(read_memory, n), controller)

    t_end = np.empty(k.shape)
    drs, static = _steps(scheduling[0]), _steps(~scheduling[0])
    if drs is not None:
        ready, n = t_drs[:, drs], k[:, drs]
        t_read = np.where(job.batch > n, read_end(job.batch - n, ready, drs), ready)
        t_end[:, drs] = np.maximum(np.maximum(t_read, t_mlp[:, drs]) + np.take(write_s, n), t_read)
    if static is not None:
        t_read = t_drs[:, static]
        static_reads = static_n[..., static] - per_core[..., static]  # each group's replayed entries
        for c in range(job.cores):
            t_read = np.where(static_reads[c] > 0, read_end(static_reads[c], t_read, static), t_read)
        t = t_read
        for c in range(job.cores):
            n = per_core[c][:, static]
            t = np.where(n > 0, np.maximum(t, mlp_end[c][:, static]) + np.take(write_s, n), t)
        t_end[:, static] = t
    by_k = add_bytes(_by_count(reads, job.batch - counts).bytes, writes.bytes)  # k written, the rest read
    return t_end, _by_count(Demand(0.0, by_k, 0.0), k)


def _layer_bytes(d: Demand) -> np.ndarray:
    """Bytes per layer summed over steps (and cores); demands are (layers, steps) or (cores, layers, steps)."""
    total = 0.0
    for nbytes in d.bytes.values():
        arr = np.asarray(nbytes, dtype=float)
        while arr.ndim > 2:
            arr = arr.sum(axis=0)
        total = total + arr.sum(axis=-1)
    return np.asarray(total, dtype=float)
