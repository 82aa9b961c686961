"""The analytic model: the event model's schedule in closed form, vectorised over layers and steps.

Each phase takes the roofline of the whole chip: the slowest core's compute, or each memory group's total
bytes at its sustained bandwidth, whichever is longer. It shares every number with the event model through
the cost model; it differs only where the event model's order matters (docs/metrics.md#event-vs-analytic):
a FIFO memory group carrying transfers over from one phase into the next, a core that finishes QKV early
starting the TAS unit early, and compute and transfers of different phases overlapping within a core.
"""

from __future__ import annotations

import numpy as np

from accelerator.cost import PHASES, CostModel, Demand, drs_core_counts, static_core_counts
from cosim.job import DecodeJob, SimResult


def chip_seconds(cost: CostModel, demand: Demand) -> np.ndarray:
    """Phase time of (cores, ...) demands: max over cores of compute, max over groups of summed bytes."""
    t = np.max(cost.seconds(demand.cycles), axis=0)
    for group, nbytes in demand.bytes.items():
        t = np.maximum(t, cost.transfer_seconds(group, np.sum(nbytes, axis=0)))
    return t


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
    both = Demand(qkv.cycles + attn.cycles, _merge(qkv.bytes, attn.bytes), qkv.macs + attn.macs)
    t_qkv = chip_seconds(cost, qkv)
    t_attn = chip_seconds(cost, both)

    step = np.arange(steps)[None, :]
    scored = np.broadcast_to(job.scores(step), shape)
    tas = cost.tas(np.where(scored, job.batch, 0))
    t_tas = np.where(scored, np.maximum(t_attn, t_qkv + cost.roofline_seconds(tas)), t_attn)

    scheduling = np.broadcast_to(job.schedules(step), shape)
    t_drs = t_tas + np.where(scheduling, cost.seconds(cost.drs(job.batch).cycles), 0.0)

    compute = job.compute.transpose(1, 2, 0)  # (layers, steps, batch) -> counts per core below
    active = np.moveaxis(compute, -1, 0)
    per_core = np.where(scheduling[None], drs_core_counts(active, cores), static_core_counts(active, cores))
    mlp = cost.mlp(per_core)
    t_mlp = t_drs + chip_seconds(cost, mlp)
    k = active.sum(axis=0)
    if job.uses_cache:
        cache = cost.replay(job.batch - k, k)
        t_end = np.maximum(t_mlp, t_drs + cost.roofline_seconds(cache))
    else:
        cache = Demand(np.zeros(shape), {}, 0.0)
        t_end = t_mlp

    per_layer = np.stack(
        [t_qkv, t_attn - t_qkv, t_tas - t_attn, t_drs - t_tas, t_mlp - t_drs, t_end - t_mlp, np.zeros(shape)],
        axis=-1,
    )
    phase_s = np.zeros((layers + 1, len(PHASES)))
    phase_s[:layers] = per_layer.sum(axis=1)
    extra = cost.extra(static_n[:, 0, 0])
    if cost.extra_cycles:
        phase_s[layers, PHASES.index("extra")] = steps * float(chip_seconds(cost, extra))

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


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for g, v in b.items():
        out[g] = out[g] + v if g in out else v
    return out


def _layer_bytes(d: Demand) -> np.ndarray:
    """Bytes per layer summed over steps (and cores); demands are (layers, steps) or (cores, layers, steps)."""
    total = 0.0
    for nbytes in d.bytes.values():
        arr = np.asarray(nbytes, dtype=float)
        while arr.ndim > 2:
            arr = arr.sum(axis=0)
        total = total + arr.sum(axis=-1)
    return np.asarray(total, dtype=float)
