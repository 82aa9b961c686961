"""The simulation driver: a resolved workload and its trace in, the run's results out."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from accelerator.cost import PHASES, CostModel
from accelerator.job import DecodeJob, SimResult
from accelerator.machine import run_instructions
from accelerator.phase_model import run_event
from cosim.analytic import run_analytic
from cosim.config import Workload, timeline_window
from cosim.traces import TraceBundle


def cost_model(w: Workload) -> CostModel:
    sa = w.sparse_attention
    return CostModel(
        w.hardware,
        w.model,
        sparse_sink_tokens=sa.sink_tokens,
        sparse_window=sa.window,
        drs_overhead_cycles=w.scheduler.overhead_cycles,
    )


def make_job(w: Workload, replay: np.ndarray | None) -> DecodeJob:
    """``replay`` None = the dense baseline of the same workload (no TAS, no replay cache, no DRS)."""
    v, dense = w.video, replay is None or not w.policy.uses_replay
    shape = (v.batch, w.model.layers, v.steps)
    compute = np.ones(shape, dtype=bool) if dense else ~replay
    return DecodeJob(
        cost=cost_model(w),
        compute=compute,
        tokens_per_frame=v.tokens_per_frame,
        prompt_tokens=v.prompt_tokens,
        drs=w.scheduler.drs,
        uses_tas=not dense and w.policy.kind not in ("fixed_interval", "random"),
        uses_cache=not dense,
    )


def execute(
    job: DecodeJob,
    mode: str,
    timeline_steps: int = 0,
    progress: bool = False,
    granularity: str = "phase",
    dispatch: str = "round_robin",
    barrier: bool = True,
    timeline_start: int = 0,
) -> SimResult:
    if mode == "analytic":
        return run_analytic(job)
    if granularity == "instruction":
        return run_instructions(job, timeline_steps, progress, dispatch, barrier, timeline_start)
    return run_event(job, timeline_steps=timeline_steps, progress=progress, timeline_start=timeline_start)


def execute_workload(
    w: Workload, job: DecodeJob, timeline_steps: int = 0, progress: bool = False, timeline_start: int = 0
) -> SimResult:
    """Run ``job`` the way workload ``w`` asks (mode, granularity, dispatch rule, layer barrier)."""
    sim, sch = w.simulation, w.scheduler
    return execute(
        job,
        sim.mode,
        timeline_steps,
        progress,
        sim.granularity,
        sch.dispatch,
        sch.layer_barrier,
        timeline_start,
    )


@dataclass
class RunResult:
    workload: Workload
    bundle: TraceBundle
    result: SimResult
    dense: SimResult
    summary: dict
    replay: np.ndarray = field(repr=False)  # (batch, layers, steps): the decisions the run used
    drs_off: SimResult | None = field(default=None, repr=False)  # the same trace with DRS off, if asked

    @functools.cached_property
    def layers(self) -> pd.DataFrame:
        """Time per kind of work per layer (``layers.csv``), made when first asked for: a sweep never asks,
        and the DataFrame takes about a millisecond to build."""
        return layer_table(self.workload, self.replay, self.result, self.dense)

    @functools.cached_property
    def cores(self) -> pd.DataFrame | None:
        """Compute-busy time of each core per decode step (``cores.csv``); None if the model kept none."""
        return core_table(self.workload, self.result)


def dense_baseline(w: Workload, progress: bool = False) -> SimResult:
    """The dense run of ``w``: it depends on everything but the policy and the trace."""
    return execute_workload(w, make_job(w, None), 0, progress)


def simulate(
    w: Workload,
    bundle: TraceBundle,
    progress: bool = False,
    dense: SimResult | None = None,
    drs_comparison: bool = True,
) -> RunResult:
    """The run and its dense baseline (``dense``: one already simulated for this workload's hardware,
    model, video, scheduler and simulation settings, as a sweep reuses it). With DRS on and a replaying
    policy, also the same trace with DRS off when ``outputs.drs_comparison`` says so, or, where the
    workload leaves it unset, ``drs_comparison`` (a sweep passes false: its points need not pay for it)."""
    replay = bundle.trace.replay_cube()
    if dense is None:
        dense = dense_baseline(w, progress)
    # a policy without replay runs the dense job itself: run it again only to record its timeline
    window = timeline_window(w)
    recorded = w.simulation.mode == "event" and len(window) > 0
    if w.policy.uses_replay or recorded:
        result = execute_workload(w, make_job(w, replay), len(window), progress, window.start)
    else:
        result = dense
    summary = summarize(w, bundle, result, dense)
    asked = w.outputs.drs_comparison if w.outputs.drs_comparison is not None else drs_comparison
    drs_off = None
    if asked and w.scheduler.drs and w.policy.uses_replay:
        static = w.model_copy(deep=True)
        static.scheduler.drs = False
        drs_off = execute_workload(static, make_job(static, replay), 0, progress)
        summary.update(drs_off_summary(result, drs_off))
    if w.sparse_attention.window is not None:  # the headline claim compares against full attention
        full = w.model_copy(deep=True)
        full.sparse_attention.window = None
        summary["dense_full_attention_latency_s"] = dense_baseline(full, progress).latency_s
        summary["speedup_vs_dense_full_attention"] = (
            summary["dense_full_attention_latency_s"] / result.latency_s
        )
    return RunResult(w, bundle, result, dense, summary, replay, drs_off)


def core_imbalance(r: SimResult) -> float | None:
    """Busiest core's compute-busy time / the mean over cores (1 = balanced; None if no core worked)."""
    mean = float(r.core_busy_s.mean())
    return float(r.core_busy_s.max()) / mean if mean > 0 else None


def drs_off_summary(r: SimResult, drs_off: SimResult) -> dict:
    """What DRS bought: the run against the same trace on the static batch-to-core mapping."""
    return {
        "drs_off_latency_s": drs_off.latency_s,
        "drs_gain": drs_off.latency_s / r.latency_s,
        "drs_off_core_busy_s": [float(v) for v in drs_off.core_busy_s],
        "drs_off_core_imbalance": core_imbalance(drs_off),
    }


def energy_breakdown_j(w: Workload, r: SimResult) -> dict[str, float]:
    return cost_model(w).energy_breakdown_j(r.latency_s, r.pe_macs, r.tas_macs, r.bytes_by_group)


def energy_j(w: Workload, r: SimResult) -> float:
    return sum(energy_breakdown_j(w, r).values())


def summarize(w: Workload, bundle: TraceBundle, r: SimResult, dense: SimResult) -> dict:
    """Top-line metrics; every key is defined in docs/metrics.md."""
    hw, v = w.hardware, w.video
    tokens = v.batch * v.steps
    parts = energy_breakdown_j(w, r)
    dense_parts = energy_breakdown_j(w, dense)
    energy, dense_energy = sum(parts.values()), sum(dense_parts.values())
    util = {g: r.bytes_by_group[g] / (r.latency_s * hw.memory[g].bandwidth_GBps * 1e9) for g in hw.memory}
    trace = bundle.trace
    out = {
        "workload": w.name,
        "mode": w.simulation.mode,
        "granularity": w.simulation.granularity if w.simulation.mode == "event" else None,
        "seed": w.simulation.seed,
        "model": w.model.name,
        "hardware": hw.name,
        "policy": w.policy.kind,
        "drs": w.scheduler.drs,
        "batch": v.batch,
        "frames": v.frames,
        "tokens_per_frame": v.tokens_per_frame,
        "decode_steps": v.steps,
        "latency_s": r.latency_s,
        "dense_latency_s": dense.latency_s,
        "speedup_vs_dense": dense.latency_s / r.latency_s,
        "replay_ratio": trace.replay_ratio(),
        "tau": bundle.tau,
        "energy_j": energy,
        "dense_energy_j": dense_energy,
        "energy_breakdown_j": parts,
        "dense_energy_breakdown_j": dense_parts,
        "avg_power_w": energy / r.latency_s,
        "tokens_per_s": tokens / r.latency_s,
        "tokens_per_j": tokens / energy if energy > 0 else None,
        "core_utilization": float(r.core_busy_s.sum() / (hw.cores * r.latency_s)),
        "core_busy_s": [float(v) for v in r.core_busy_s],
        "core_imbalance": core_imbalance(r),
        "memory_bandwidth_utilization": max(util.values()),
        "memory_bandwidth_utilization_by_group": util,
        "bytes_by_group": r.bytes_by_group,
        "breakdown_s": r.breakdown_s,
        "dense_breakdown_s": dense.breakdown_s,
        "drs_events": r.drs_events,
        "trace_source": trace.meta.source,
        "trace_label": trace.meta.label(),
        "trace_is_real": trace.meta.is_real,
    }
    if r.machine is not None and r.machine["granularity"] == "instruction":
        out["machine"] = {k: v for k, v in r.machine.items() if k != "granularity"}
    if bundle.quality:
        out["quality"] = bundle.quality
    from accelerator.rtl.resources import estimate, fits

    resources = estimate(hw)
    out["resources_estimate"] = {k: resources[k] for k in ("luts", "ffs", "dsps", "brams", "label")}
    out["fits_board"], out["fits_board_detail"] = fits(hw)
    out.update(memory_fit(w))
    return out


def memory_fit(w: Workload) -> dict:
    """Whether the data fit the memory groups they are placed in, and the sizes that decide it (a sweep
    runs designs that do not fit, to record them as such; ``run`` refuses them before the work)."""
    from accelerator.capacity import GIB, shortfalls
    from cosim.config import memory_use

    use = memory_use(w)
    held = {h.what: h.bytes / GIB for u in use.values() for h in u.holdings}
    return {
        "fits_memory": not shortfalls(use),
        "memory_fit_detail": "; ".join(f"{g}: {u.describe()}" for g, u in use.items() if u.holdings),
        "weights_GiB": held.get("weights", 0.0),
        "kv_cache_GiB": held.get("KV cache", 0.0),
        "replay_cache_GiB": held.get("replay cache", 0.0),
    }


def layer_table(
    w: Workload, replay: np.ndarray, r: SimResult, dense: SimResult | None = None
) -> pd.DataFrame:
    layers = w.model.layers
    frame = pd.DataFrame({"layer": np.arange(layers)})
    for i, phase in enumerate(PHASES):
        if phase != "extra":
            frame[f"{phase}_s"] = r.layer_phase_s[:layers, i]
    frame["total_s"] = r.layer_phase_s[:layers].sum(axis=1)
    frame["replay_ratio"] = replay.mean(axis=(0, 2)) if w.policy.uses_replay else 0.0
    frame["bytes_moved"] = r.layer_bytes
    if dense is not None:
        frame["dense_total_s"] = dense.layer_phase_s[:layers].sum(axis=1)
    return frame


def core_table(w: Workload, r: SimResult) -> pd.DataFrame | None:
    """One row per decode step: its frame, when it starts and ends, and each core's compute-busy time in
    it (``core<i>_busy_s``); a core's busy fraction in a step is its busy time / (end - start)."""
    if r.core_step_busy_s is None or r.step_end_s is None:
        return None
    steps = len(r.step_end_s)
    frame = pd.DataFrame({"step": np.arange(steps), "frame": np.arange(steps) // w.video.tokens_per_frame})
    frame["start_s"] = np.concatenate([[0.0], r.step_end_s[:-1]])
    frame["end_s"] = r.step_end_s
    for c in range(r.core_step_busy_s.shape[1]):
        frame[f"core{c}_busy_s"] = r.core_step_busy_s[:, c]
    return frame
