"""The event model: SimPy schedules the cost model's demands over contended cores, memory and units.

Per layer of a decode step the pre-compiled instruction stream runs: each core projects Q/K/V and attends
for the entries statically mapped to it; the TAS unit scores a core's entries as soon as that core's QKV
is done (overlapping attention); once every decision of the layer is known DRS rebalances the computing
entries (or the static mapping stands); the cores run the MLPs while the replay-cache controller reads the
replayed outputs and stores fresh ones; the next layer starts when all of that is done. Memory groups are
FIFO bandwidth servers shared by all cores and units, so transfers contend.
"""

from __future__ import annotations

import numpy as np
import simpy
from tqdm import tqdm

from accelerator.core import Core
from accelerator.cost import PHASES, static_core_counts
from accelerator.drs import DrsScheduler
from accelerator.memory import MemoryServer
from accelerator.replay_cache import ReplayCacheController
from accelerator.tas_unit import TasUnit
from accelerator.timeline import Timeline
from accelerator.unit import plan
from cosim.job import DecodeJob, SimResult, unique_demands


def run_event(job: DecodeJob, timeline_steps: int = 0, progress: bool = False) -> SimResult:
    cost, hw = job.cost, job.cost.hw
    env = simpy.Environment()
    timeline = Timeline()
    memory = {name: MemoryServer(env, name, group, timeline) for name, group in hw.memory.items()}
    cores = [Core(env, c, cost, memory, timeline) for c in range(hw.cores)]
    tas_unit = TasUnit(env, cost, memory, timeline)
    cache = ReplayCacheController(env, cost, memory, timeline)
    # The static mapping needs no index register, so it has no 32-entry limit; only DRS is built with one.
    drs = DrsScheduler(cost, job.batch, hw.cores) if job.drs and job.uses_cache else None

    layers, steps, batch = job.layers, job.steps, job.batch
    phase_s = np.zeros((layers + 1, len(PHASES)))
    layer_bytes = np.zeros(layers)
    static_n = static_core_counts(np.ones(batch, dtype=bool), hw.cores).tolist()
    # Tasks per distinct entry count, planned once: the loop below only schedules.
    qkv = unique_demands(lambda n: plan(cost, memory, cost.qkv(n)), static_n)
    mlp = unique_demands(lambda n: plan(cost, memory, cost.mlp(n)), range(batch + 1))
    extra = unique_demands(lambda n: plan(cost, memory, cost.extra(n)), static_n)
    computing = job.compute.sum(axis=0).tolist()  # [layer][step]: entries that compute the MLP
    static_mlp = static_core_counts(job.compute, hw.cores).transpose(1, 2, 0).tolist()  # [layer][step][core]
    ctx = job.context()
    per_core = list(enumerate(static_n))

    def moved() -> float:
        return sum(m.bytes_moved for m in memory.values())

    def decode():
        for s in tqdm(range(steps), desc="event model", unit="step", disable=not progress, leave=False):
            timeline.enabled = s < timeline_steps
            attention = unique_demands(lambda n, c=ctx[s]: plan(cost, memory, cost.attention(n, c)), static_n)
            scored, schedules = bool(job.scores(s)), bool(job.schedules(s))
            for layer in range(layers):
                t0, b0 = env.now, moved()
                qkv_end = [cores[c].execute("qkv", qkv[n], n) for c, n in per_core]
                t_qkv = max(qkv_end)
                t_attn = max(cores[c].execute("attention", attention[n], n) for c, n in per_core)
                t_tas = t_attn
                if scored:
                    t_tas = max(t_attn, *(tas_unit.submit(n, qkv_end[c]) for c, n in per_core))
                k = computing[layer][s]
                if schedules:
                    mlp_n = drs.schedule(k).tolist()
                    t_drs = t_tas + drs.seconds
                    if timeline.enabled:
                        timeline.span("units", "drs", "drs", t_tas, t_drs, computing=k)
                else:
                    mlp_n = static_mlp[layer][s]
                    t_drs = t_tas
                yield env.timeout(t_drs - env.now)
                t_mlp = max(cores[c].execute("mlp", mlp[n], n) for c, n in enumerate(mlp_n))
                t_end = t_mlp
                if job.uses_cache:
                    t_end = max(t_mlp, cache.submit(batch - k, k, t_drs))
                yield env.timeout(t_end - env.now)
                phase_s[layer] += (
                    t_qkv - t0,
                    t_attn - t_qkv,
                    t_tas - t_attn,
                    t_drs - t_tas,
                    t_mlp - t_drs,
                    t_end - t_mlp,
                    0,
                )
                layer_bytes[layer] += moved() - b0
            if cost.extra_cycles:
                t0 = env.now
                t_extra = max(cores[c].execute("extra", extra[n], n) for c, n in per_core)
                yield env.timeout(t_extra - env.now)
                phase_s[layers, PHASES.index("extra")] += t_extra - t0

    env.process(decode())
    env.run()
    return SimResult(
        latency_s=env.now,
        layer_phase_s=phase_s,
        layer_bytes=layer_bytes,
        core_busy_s=np.array([c.busy_s for c in cores]),
        bytes_by_group={name: m.bytes_moved for name, m in memory.items()},
        pe_macs=sum(c.macs for c in cores),
        tas_macs=tas_unit.macs,
        drs_events=drs.events if drs else 0,
        replay_reads=cache.reads,
        replay_writes=cache.writes,
        timeline=timeline.to_json() if timeline_steps else None,
    )
