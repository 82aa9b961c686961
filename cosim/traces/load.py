"""Trace sources: where a workload's replay decisions come from (synthetic, file, transfer, capture).

:func:`load_trace` is the one way from a resolved workload to its :class:`TraceBundle`. A capture imports
torch, but only when one runs (:mod:`cosim.traces.capture` imports :mod:`models.capture` inside its
functions), so loading a synthetic or file trace never does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosim.config import Workload, WorkloadError
from cosim.traces.bundle import TraceBundle
from cosim.traces.capture import capture_bundle
from cosim.traces.policies import apply_policy
from cosim.traces.schema import Trace, TraceError, read_trace
from cosim.traces.synthetic import synthetic_meta, synthetic_tas


def _dims_dict(w: Workload) -> dict:
    m = w.model
    return {
        k: getattr(m, k) for k in ("name", "layers", "hidden", "heads", "kv_heads", "head_dim", "mlp_hidden")
    }


def _check_shape(trace: Trace, w: Workload, origin: str) -> None:
    m, v = trace.meta, w.video
    want = {
        "layers": w.model.layers,
        "frames": v.frames,
        "tokens_per_frame": v.tokens_per_frame,
        "batch": v.batch,
    }
    have = {"layers": m.layers, "frames": m.frames, "tokens_per_frame": m.tokens_per_frame, "batch": m.batch}
    for key, value in want.items():
        if have[key] != value:
            raise WorkloadError(
                f"trace.path: {origin} has {key} = {have[key]}, the workload needs {value} "
                f"(use trace.source: transfer to map a trace onto other dims)"
            )


def _decide(trace: Trace, w: Workload) -> TraceBundle:
    """Re-decide from the trace's TAS when the workload's policy asks for other decisions than stored."""
    p = w.policy
    keep = p.kind == trace.meta.policy and p.threshold is None and p.target_replay_ratio is None
    if keep:
        return TraceBundle(trace, trace.meta.threshold)
    try:
        replay, tau = apply_policy(trace.tas_cube(), p, trace.meta.tokens_per_frame, w.seed, w.video.cfg)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from None
    meta = trace.meta
    meta.policy, meta.threshold = p.kind, tau
    table = trace.table.copy()
    table["replay"] = replay.ravel()
    return TraceBundle(Trace(table, meta, grid_known=True), tau)  # ids unchanged from a checked trace


#: The workload key behind each transfer_trace argument, for error messages.
_TRANSFER_KEYS = {
    "trace": "trace.path",
    "layers": "model.layers",
    "tokens_per_frame": "video.tokens_per_frame",
    "frames": "video.frames",
    "batch": "video.prompts",  # batch = prompts x (2 with video.cfg)
    "seed": "simulation.seed",
}


def load_trace(w: Workload, progress: bool = False) -> TraceBundle:
    source, v = w.trace.source, w.video
    if source == "synthetic":
        tas = synthetic_tas(
            batch=v.batch,
            layers=w.model.layers,
            frames=v.frames,
            tokens_per_frame=v.tokens_per_frame,
            cfg=v.cfg,
            knobs=w.trace.synthetic,
            seed=w.seed,
        )
        meta = synthetic_meta(
            batch=v.batch,
            layers=w.model.layers,
            frames=v.frames,
            tokens_per_frame=v.tokens_per_frame,
            cfg=v.cfg,
            model=_dims_dict(w),
            seed=w.seed,
        )
        meta.policy = "none"
        trace = Trace.from_arrays(tas, np.zeros(tas.shape, dtype=bool), meta)
        return _decide(trace, w)
    if source in ("file", "transfer"):
        path = Path(w.trace.path)
        try:
            trace = read_trace(path)
        except TraceError as exc:
            raise WorkloadError(f"trace.path: {exc}") from None
        if source == "transfer":
            from cosim.traces.transfer import TransferError, transfer_trace  # lazy: only transfers need it

            try:
                trace = transfer_trace(
                    trace,
                    layers=w.model.layers,
                    tokens_per_frame=v.tokens_per_frame,
                    frames=v.frames,
                    batch=v.batch,
                    seed=w.seed,
                    model=_dims_dict(w),
                    source_path=str(path),
                )
            except TransferError as exc:
                key = _TRANSFER_KEYS.get(exc.param, "trace.path")
                if exc.param == "seed" and w.trace.seed is not None:
                    key = "trace.seed"
                hint = " (video.cfg: true, or an even video.prompts)" if exc.param == "batch" else ""
                raise WorkloadError(f"{key}: cannot transfer {path}: {exc.reason}{hint}") from None
        else:
            _check_shape(trace, w, str(path))
        return _decide(trace, w)
    if source == "capture":
        return capture_bundle(w, progress=progress)
    raise WorkloadError(f"trace.source: unknown source {source!r}")
