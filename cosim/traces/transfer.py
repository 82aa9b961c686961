"""Trace transfer: map a captured trace onto larger model/video dims, keeping its measured structure.

Why: the paper's workloads (VILA-U 7B: 32 layers, 8 x 256 tokens, B = 10) cannot be captured on this CPU,
but a trace captured from a real trained model carries the statistics that matter to the hardware: how
replay varies with layer depth, where in the frame it happens (moving objects vs static background), how
it evolves over frames, and that the two CFG copies of a prompt decide differently. Transfer is a pure
index mapping (every target entry copies one source entry), so TAS values, replay decisions and MLP errors
stay samples of the real model -- nothing is invented. The method (also in docs/capture.md):

* layers: target layer l' has relative depth (l' + 0.5) / L'; it copies source layer
  floor(depth * L), so shallow/middle/deep profiles stretch over the new depth;
* tokens: both frames are treated as token grids (square when N is a square, else the most
  square factorisation); a target cell copies the source cell at the same relative position (nearest
  neighbour), so a moving object covers the same fraction of the frame and stays one blob;
* frames: frame 0 maps to frame 0 (never replays); target frame f' >= 1 copies source frame
  1 + floor((f' - 1) * (T - 1) / (T' - 1)), so trends over the video are stretched, not cycled;
* batch: CFG pairs stay pairs: target pair p' copies a source pair chosen round-robin over a seeded
  permutation; pairs reused beyond the first round get a seeded mirror (horizontal and/or vertical flip of
  the token grid) so repeated sequences are not identical copies. Without CFG, rows are mapped the same way.

The replay ratio over eligible frames is preserved up to sampling; the overall ratio scales with
(T' - 1) / T' vs (T - 1) / T, since the first frame never replays.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from cosim.traces.schema import Trace, TraceError, TraceMeta


class TransferError(TraceError):
    """A transfer that cannot be made. ``param`` names the :func:`transfer_trace` argument at fault
    (``trace`` for the source trace itself), ``reason`` says why, so a caller can name its own key."""

    def __init__(self, param: str, reason: str) -> None:
        self.param, self.reason = param, reason
        super().__init__(f"transfer {param}: {reason}")


def grid_shape(n: int) -> tuple[int, int]:
    """Most square (rows, cols) with rows * cols = n and rows <= cols."""
    r = int(math.isqrt(n))
    while n % r:
        r -= 1
    return r, n // r


def _layer_map(src: int, dst: int) -> np.ndarray:
    depth = (np.arange(dst) + 0.5) / dst
    return np.minimum((depth * src).astype(int), src - 1)


def _frame_map(src: int, dst: int) -> np.ndarray:
    out = np.zeros(dst, int)
    if dst > 1:
        if src < 2:
            raise TransferError(
                "trace",
                f"the source trace has {src} frame; {dst} frames need a source with at least 2 "
                f"(frame 0 never replays, so a one-frame trace holds no replay decision to copy)",
            )
        f = np.arange(1, dst)
        out[1:] = 1 + ((f - 1) * (src - 1)) // (dst - 1)
    return out


def _token_map(src_n: int, dst_n: int, flip_h: bool, flip_v: bool) -> np.ndarray:
    sr, sc = grid_shape(src_n)
    dr, dc = grid_shape(dst_n)
    rows = np.minimum(((np.arange(dr) + 0.5) * sr / dr).astype(int), sr - 1)
    cols = np.minimum(((np.arange(dc) + 0.5) * sc / dc).astype(int), sc - 1)
    if flip_v:
        rows = sr - 1 - rows
    if flip_h:
        cols = sc - 1 - cols
    return (rows[:, None] * sc + cols[None, :]).ravel()


def _pairs(meta: TraceMeta) -> tuple[bool, int]:
    cfg = bool(meta.extra.get("cfg", False)) and meta.batch % 2 == 0
    return cfg, meta.batch // 2 if cfg else meta.batch


def transfer_trace(
    trace: Trace,
    *,
    layers: int,
    tokens_per_frame: int,
    frames: int,
    batch: int,
    seed: int,
    model: dict | None = None,
) -> Trace:
    """Map ``trace`` to (batch, layers, frames x tokens_per_frame); deterministic in ``seed``.

    ``model``: the target's dims for the metadata (default: the source's; the source dims are always kept
    under ``extra["transfer"]["source_model"]``).
    The result has ``source="transferred"`` and the original's ``source_detail`` (the checkpoint), so every
    report says "transferred from <checkpoint>". With CFG in the source, ``batch`` must be even and keeps
    the layout rows [0, B/2) conditional, [B/2, B) unconditional. The result keeps the source's
    ``integrity`` (an edited or unchecked source stays labelled so). A transfer that cannot be made raises
    :class:`TransferError` naming the argument at fault.
    """
    m = trace.meta
    dims = {"layers": layers, "tokens_per_frame": tokens_per_frame, "frames": frames, "batch": batch}
    for name, value in dims.items():
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise TransferError(name, f"the target {name} must be a positive integer, got {value!r}")
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise TransferError("seed", f"the seed must be a non-negative integer, got {seed!r}")
    if model is not None and not isinstance(model, dict):
        raise TransferError("model", f"the target model dims must be a mapping, got {type(model).__name__}")
    cfg, src_units = _pairs(m)
    if cfg and batch % 2:
        raise TransferError(
            "batch", f"the source trace holds CFG pairs, so the target batch must be even, got {batch}"
        )
    dst_units = batch // 2 if cfg else batch
    rng = np.random.default_rng(seed)
    order = rng.permutation(src_units)
    unit_src = np.array([order[u % src_units] for u in range(dst_units)])
    flips = [(False, False)] * min(dst_units, src_units) + [
        (bool(a), bool(b)) for a, b in rng.integers(0, 2, size=(max(0, dst_units - src_units), 2))
    ]
    for u in range(src_units, dst_units):  # a reused unit must differ from its first use
        if flips[u] == (False, False):
            flips[u] = (True, False)

    lmap = _layer_map(m.layers, layers)
    fmap = _frame_map(m.frames, frames)
    steps = frames * tokens_per_frame
    row_src = np.empty(batch, int)
    step_src = np.empty((batch, steps), int)
    for u in range(dst_units):
        tmap = _token_map(m.tokens_per_frame, tokens_per_frame, *flips[u])
        s_map = (fmap[:, None] * m.tokens_per_frame + tmap[None, :]).ravel()
        rows = [(u, unit_src[u]), (u + dst_units, unit_src[u] + src_units)] if cfg else [(u, unit_src[u])]
        for dst_row, src_row in rows:
            row_src[dst_row] = src_row
            step_src[dst_row] = s_map

    def remap(cube: np.ndarray) -> np.ndarray:
        picked = cube[row_src][:, lmap]  # (B', L', S)
        return np.take_along_axis(picked, step_src[:, None, :].repeat(layers, axis=1), axis=2)

    tas = remap(trace.tas_cube())
    replay = remap(trace.replay_cube())
    err = remap(trace._cube("mlp_rel_error")) if "mlp_rel_error" in trace.table.columns else None
    replay[:, :, :tokens_per_frame] = False  # frame 0 maps to frame 0 already; kept explicit
    extra = dict(m.extra)
    extra["transfer"] = {
        "from": {
            "layers": m.layers,
            "tokens_per_frame": m.tokens_per_frame,
            "frames": m.frames,
            "batch": m.batch,
        },
        "to": {"layers": layers, "tokens_per_frame": tokens_per_frame, "frames": frames, "batch": batch},
        "seed": seed,
        "method": "nearest relative depth / nearest grid cell / stretched frames / CFG pairs kept (cosim.transfer)",
        "source_model": m.model,
        "layer_map": lmap.tolist(),
        "frame_map": fmap.tolist(),
        "row_map": row_src.tolist(),
        "flips": [list(f) for f in flips],
    }
    if cfg:
        extra["batch_labels"] = [m.extra.get("batch_labels", [None] * m.batch)[r] for r in row_src]
    meta = TraceMeta(
        layers=layers,
        frames=frames,
        tokens_per_frame=tokens_per_frame,
        batch=batch,
        source="transferred",
        source_detail=m.source_detail,
        policy=m.policy,
        threshold=m.threshold,
        model=model if model is not None else m.model,
        extra=extra,
        integrity=m.integrity,  # an edited or unchecked source stays labelled so after transfer
    )
    return Trace.from_arrays(tas, replay, meta, mlp_rel_error=err)
