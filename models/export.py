"""Turn per-step decisions logged by another implementation (e.g. FastCar's reference code on a GPU) into
a Trace in this project's schema. Kept free of any GPU or HF dependency so it runs wherever the logs land.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cosim.traces import Trace, TraceError, TraceMeta


def _np(e: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array-like -> float64 numpy array."""
    if hasattr(e, "detach"):
        e = e.detach().float().cpu().numpy()
    return np.asarray(e, dtype=np.float64)


def _stack(per_layer: Sequence[Sequence[Any]], batch: int) -> np.ndarray:
    """[layer][entry] of (B,) / (B, 1) tensors or arrays -> (B, L, E) float64."""
    return np.stack(
        [np.stack([_np(e).reshape(batch) for e in entries], axis=1) for entries in per_layer], axis=1
    )


def trace_from_step_logs(
    skip: Sequence[Sequence[Any]],
    *,
    tokens_per_frame: int,
    frames: int,
    checkpoint: str,
    tas: Sequence[Sequence[Any]] | None = None,
    leading_steps: int = 1,
    policy: str = "tas",
    threshold: float | None = None,
    model: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Trace:
    """Build a captured Trace from per-layer lists of per-decode-step decisions.

    ``skip[layer][e]`` is the (B,) or (B, 1) replay decision of single-token forward ``e``; ``tas`` the
    matching scores. A trace holds a finite TAS for every step after the first frame (the first frame's
    are set to NaN here), so ``tas`` is required and may be NaN only inside the first frame. Steps that
    produced a token without a logged single-token forward -- in the reference code the first video token
    comes out of the prefill pass -- are ``leading_steps`` non-replaying steps prepended, so
    step = e + leading_steps. Extra trailing entries (e.g. an end token) are dropped.
    """
    steps = frames * tokens_per_frame
    batch = int(_np(skip[0][0]).size)
    rep = _stack(skip, batch) > 0.5
    need = steps - leading_steps
    if rep.shape[2] < need:
        raise ValueError(
            f"logs hold {rep.shape[2]} steps per layer, {need} needed for {frames} x {tokens_per_frame}"
        )
    pad = ((0, 0), (0, 0), (leading_steps, 0))
    rep = np.pad(rep[:, :, :need], pad, constant_values=False)
    if rep[:, :, :tokens_per_frame].any():
        raise ValueError("the logs replay inside the first frame; check tokens_per_frame and leading_steps")
    if tas is None:
        raise TraceError(
            "trace_from_step_logs: tas is required: a trace needs a TAS for every step after the first "
            "frame (log the score next to each decision)"
        )
    sc = _stack(tas, batch)
    if sc.shape[:2] != rep.shape[:2] or sc.shape[2] < need:
        raise TraceError(
            f"trace_from_step_logs: tas logs have shape (batch, layers, entries) = {sc.shape}, "
            f"{rep.shape[:2]} with at least {need} entries needed"
        )
    sc = np.pad(sc[:, :, :need], pad, constant_values=np.nan)
    sc[:, :, :tokens_per_frame] = np.nan
    meta = TraceMeta(
        layers=rep.shape[1],
        frames=frames,
        tokens_per_frame=tokens_per_frame,
        batch=batch,
        source="captured",
        source_detail=checkpoint,
        policy=policy,
        threshold=threshold,
        model=model or {},
        extra=extra or {},
    )
    return Trace.from_arrays(sc.astype(np.float32), rep, meta)
