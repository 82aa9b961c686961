"""The analytic model: the phase model's schedule in closed form, vectorised over layers and steps.

Each phase takes the roofline of the whole chip: the slowest core's compute, or each memory group's total
bytes at its sustained bandwidth, whichever is longer. It shares every number with the event model through
the cost model; it differs only where the phase model's order matters (docs/cost_model.md, "How far apart
the executions are"): a FIFO memory group carrying transfers over from one phase into the next, a core
that finishes QKV early starting the TAS unit early, and compute and transfers of different phases
overlapping within a core.
"""

from __future__ import annotations

import numpy as np

from accelerator.cost import PHASES, CostModel, Demand, add_bytes, drs_core_counts, static_core_counts
from accelerator.job import DecodeJob, SimResult, critical_path


def memory_seconds(cost: CostModel, demand: Demand) -> np.ndarray:
    """Time of (cores, ...) demands' transfers: each group moves every core's bytes at its bandwidth."""
    t = 0.0
    for group, nbytes in demand.bytes.items():
        t = np.maximum(t, cost.transfer_seconds(group, np.sum(nbytes, axis=0)))
    return t


def chip_seconds(cost: CostModel, demand: Demand) -> np.ndarray:
    """Phase time of (cores, ...) demands: max over cores of compute, max over groups of summed bytes."""
    return np.maximum(np.max(cost.seconds(demand.cycles), axis=0), memory_seconds(cost, demand))


def _sum(demand: Demand, into: dict[str, float]) -> None:
    for group, nbytes in demand.bytes.items():
        into[group] = into.get(group, 0.0) + float(np.sum(nbytes))


def run_analytic(job: DecodeJob) -> SimResult:
    cost, cores, layers, steps = job.cost, job.cores, job.layers, job.steps
    shape = (layers, steps)
    static_n = static_core_counts(np.ones(job.batch, dtype=bool), cores)[:, None, None] * np.ones(
        (1,) + shape, dtype=np.int64
    )
    ctx = job.context()[None, None, :]

    qkv = cost.qkv(static_n)
    attn = cost.attention(static_n, ctx)
    both = Demand(qkv.cycles + attn.cycles, add_bytes(qkv.bytes, attn.bytes), qkv.macs + attn.macs)
    t_qkv = chip_seconds(cost, qkv)
    t_attn = chip_seconds(cost, both)

    step = np.arange(steps)[None, :]
    scored = np.broadcast_to(job.scores(step), shape)
    per_group = cost.tas(np.where(scored, static_n, 0))  # one TAS instruction per core's static group
    tas = Demand(
        per_group.cycles.sum(axis=0),
        {g: b.sum(axis=0) for g, b in per_group.bytes.items()},
        per_group.macs.sum(axis=0),
    )
    t_bits = np.where(scored, t_qkv + cost.roofline_seconds(tas), 0.0)  # every index-register bit written

    scheduling = np.broadcast_to(job.schedules(step), shape)
    t_drs = t_bits + np.where(scheduling, cost.seconds(cost.drs(job.batch).cycles), 0.0)
    t_ready = np.maximum(t_attn, t_drs)  # an MLP needs its entry's attention output and its mapping

    compute = job.compute.transpose(1, 2, 0)  # (layers, steps, batch) -> counts per core below
    active = np.moveaxis(compute, -1, 0)
    per_core = np.where(scheduling[None], drs_core_counts(active, cores), static_core_counts(active, cores))
    mlp = cost.mlp(per_core)
    # After DRS an MLP may run on another core than its attention, so it waits for every core; under the
    # static mapping each core needs only its own attention and the index bits. A core's attention ends
    # with its compute or, at the latest, when the chip's QKV and attention transfers are in (the
    # roofline does not say which core's bytes arrive first, so it takes the last).
    core_attn = np.maximum(cost.seconds(both.cycles), memory_seconds(cost, both))
    ready_core = np.where(scheduling[None], t_ready[None], np.maximum(core_attn, t_drs[None]))
    mlp_end = ready_core + cost.seconds(mlp.cycles)
    t_mlp = np.maximum(np.max(mlp_end, axis=0), t_ready + memory_seconds(cost, mlp))
    k = active.sum(axis=0)
    if job.uses_cache:
        # Reads start once the mapping is known and every attention output is written (a read forms
        # y = h + d); writes follow the MLPs whose outputs they store. After DRS one instruction each for
        # every entry; statically one per core's group, in core order.
        reads, writes = cost.replay(job.batch - k, 0), cost.replay(0, k)

        def read_end(demand: Demand, ready):
            """The transfer from ``ready``, the controller from the attention outputs on."""
            memory = cost.roofline_seconds(Demand(0.0, demand.bytes))
            return np.maximum(ready + memory, np.maximum(ready, t_attn) + cost.seconds(demand.cycles))

        drs_read = np.where(job.batch > k, read_end(reads, t_drs), t_drs)
        static_reads = static_n - per_core  # under the static mapping: each group's replayed entries
        static_read, read_cycles, write_cycles = t_drs, 0.0, 0.0
        for c in range(cores):
            r = cost.replay(static_reads[c], 0)
            static_read = np.where(static_reads[c] > 0, read_end(r, static_read), static_read)
            read_cycles = read_cycles + r.cycles
            write_cycles = write_cycles + cost.replay(0, per_core[c]).cycles
        t_read = np.where(scheduling, drs_read, static_read)
        after_drs = np.maximum(np.maximum(t_read, t_mlp) + cost.roofline_seconds(writes), t_read)
        static = t_read
        for c in range(cores):
            wrote = per_core[c] > 0
            step_end = np.maximum(static, mlp_end[c]) + cost.roofline_seconds(cost.replay(0, per_core[c]))
            static = np.where(wrote, step_end, static)
        t_end = np.where(scheduling, after_drs, static)
        cycles = np.where(scheduling, reads.cycles + writes.cycles, read_cycles + write_cycles)
        cache = Demand(cycles, add_bytes(reads.bytes, writes.bytes), 0.0)
    else:
        cache = Demand(np.zeros(shape), {}, 0.0)
        t_end = t_mlp

    # Milestones as the event model records them; the critical path is charged in execution order.
    ends = np.stack(
        [
            t_qkv,
            t_attn,
            np.where(scored, t_bits, -np.inf),
            np.where(scheduling, t_drs, -np.inf),
            t_mlp,
            np.where(job.uses_cache, t_end, -np.inf),
        ],
        axis=-1,
    )
    layer_time = np.max(ends, axis=-1)  # (layers, steps)
    extra = cost.extra(static_n[:, 0, 0])
    step_extra = float(chip_seconds(cost, extra)) if cost.extra_cycles else 0.0
    starts = np.concatenate(
        [
            [0.0],
            np.cumsum(np.concatenate([layer_time.T, np.full((steps, 1), step_extra)], axis=1).ravel())[:-1],
        ]
    ).reshape(steps, layers + 1)
    rows = np.full((steps, layers + 1, len(PHASES)), -np.inf)
    rows[:, :layers, : ends.shape[-1]] = starts[:, :layers, None] + ends.transpose(1, 0, 2)
    if step_extra:
        rows[:, layers, PHASES.index("extra")] = starts[:, layers] + step_extra
    phase_s = critical_path(rows.reshape(-1, len(PHASES)), layers)

    bytes_by_group: dict[str, float] = {g: 0.0 for g in cost.hw.memory}
    for d in (both, tas, mlp, cache):
        _sum(d, bytes_by_group)
    layer_bytes = sum(_layer_bytes(d) for d in (both, tas, mlp, cache))
    busy_cycles = (
        both.cycles.sum(axis=(1, 2)) + mlp.cycles.sum(axis=(1, 2)) + steps * np.asarray(extra.cycles)
    )
    return SimResult(
        latency_s=float(phase_s.sum()),
        layer_phase_s=phase_s,
        layer_bytes=layer_bytes,
        core_busy_s=cost.seconds(busy_cycles).astype(float),
        bytes_by_group=bytes_by_group,
        pe_macs=float(np.sum(both.macs) + np.sum(mlp.macs) + steps * np.sum(extra.macs)),
        tas_macs=float(np.sum(tas.macs)),
        drs_events=int(scheduling.sum()),
        replay_reads=int(np.sum(np.where(job.uses_cache, job.batch - k, 0))),
        replay_writes=int(np.sum(np.where(job.uses_cache, k, 0))),
    )


def _layer_bytes(d: Demand) -> np.ndarray:
    """Bytes per layer summed over steps (and cores); demands are (layers, steps) or (cores, layers, steps)."""
    total = 0.0
    for nbytes in d.bytes.values():
        arr = np.asarray(nbytes, dtype=float)
        while arr.ndim > 2:
            arr = arr.sum(axis=0)
        total = total + arr.sum(axis=-1)
    return np.asarray(total, dtype=float)
