"""Synthetic TAS traces with the structure docs/fastcar.md describes, for when no capture is at hand.

The generator draws, per prompt, a few objects that move smoothly over a static background. A token's
TAS is a per-layer base (shallow and deep layers high, middle layers low), lowered where an object covers
the position in this frame or the previous one, plus a static spatial texture, temporally correlated noise
and a small per-CFG-copy noise. Both CFG copies see the same video (they are fed the same sampled token),
so their TAS is strongly correlated; they sit where a capture puts them, the conditional copy of prompt p at
row p and the unconditional one at row p + P (P prompts; ``extra.cfg_layout: halves``). Frame 0 has no
aligned token: its TAS is NaN.

Every trace made here says ``source: synthetic``; reports label it as such.
"""

from __future__ import annotations

import numpy as np

from cosim.config import SyntheticSection
from cosim.traces.schema import CFG_LAYOUT, TraceMeta

#: TAS of a static token at a shallow/deep layer (logit units). Chosen so that the paper's reference
#: thresholds (-4 demo, -1 benchmark) fall inside the distribution.
BASE_TAS = -2.0


def grid_shape(tokens_per_frame: int) -> tuple[int, int]:
    """Rows x columns of the raster, as square as the token count allows."""
    rows = int(np.sqrt(tokens_per_frame))
    while tokens_per_frame % rows:
        rows -= 1
    return rows, tokens_per_frame // rows


def motion_maps(
    frames: int, tokens_per_frame: int, moving_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """(frames, tokens) coverage in [0, 1] of moving objects, one video."""
    rows, cols = grid_shape(tokens_per_frame)
    y, x = np.mgrid[0:rows, 0:cols]
    n_obj = max(1, int(round(moving_fraction * 6)))
    radius = max(0.5, np.sqrt(moving_fraction * rows * cols / (np.pi * n_obj)))
    pos = rng.uniform([0, 0], [rows, cols], size=(n_obj, 2))
    vel = rng.normal(0, max(1.0, 0.08 * max(rows, cols)), size=(n_obj, 2))
    cover = np.zeros((frames, rows, cols))
    for t in range(frames):
        p = np.mod(pos + vel * t, [rows, cols])
        for py, px in p:
            d2 = (y - py) ** 2 + (x - px) ** 2
            cover[t] = np.maximum(cover[t], np.exp(-d2 / (2 * radius**2)))
    return (
        cover.reshape(frames, tokens_per_frame)
        if moving_fraction > 0
        else np.zeros((frames, tokens_per_frame))
    )


def layer_profile(layers: int, depth_profile: float) -> np.ndarray:
    """Per-layer base TAS: a dip in the middle layers, as the paper's per-layer replay ratios show."""
    depth = np.linspace(0.0, 1.0, layers)
    return BASE_TAS - depth_profile * np.sin(np.pi * depth) ** 2


def synthetic_tas(
    *,
    batch: int,
    layers: int,
    frames: int,
    tokens_per_frame: int,
    cfg: bool,
    knobs: SyntheticSection,
    seed: int,
) -> np.ndarray:
    """(batch, layers, steps) TAS cube. With ``cfg`` the batch is laid out as captures lay it out
    (:data:`~cosim.traces.schema.CFG_LAYOUT`): the conditional copy of video v is row v, its
    unconditional copy row v + batch / 2."""
    rng = np.random.default_rng(seed)
    copies = 2 if cfg else 1
    videos = batch // copies
    steps = frames * tokens_per_frame
    profile = layer_profile(layers, knobs.depth_profile)[None, :, None, None]
    out = np.empty((batch, layers, frames, tokens_per_frame))
    for v in range(videos):
        cover = motion_maps(frames, tokens_per_frame, knobs.moving_fraction, rng)
        changed = np.maximum(cover, np.vstack([cover[:1], cover[:-1]]))
        texture = rng.normal(0, 0.5 * knobs.noise, size=(layers, 1, tokens_per_frame))
        # AR(1) in time per (layer, position): decisions at one position are correlated frame to frame.
        shocks = rng.normal(0, knobs.noise, size=(layers, frames, tokens_per_frame))
        ar = np.empty_like(shocks)
        ar[:, 0] = shocks[:, 0]
        for t in range(1, frames):
            ar[:, t] = 0.6 * ar[:, t - 1] + 0.8 * shocks[:, t]
        video_tas = profile[0] - knobs.motion_drop * changed[None] + texture + ar
        for c in range(copies):  # copy c of video v at row c x videos + v: the halves layout
            out[c * videos + v] = video_tas + rng.normal(0, knobs.cfg_noise, size=video_tas.shape)
    out[:, :, 0, :] = np.nan
    return out.reshape(batch, layers, steps).astype(np.float32)


def synthetic_meta(
    *, batch: int, layers: int, frames: int, tokens_per_frame: int, cfg: bool, model: dict, seed: int
) -> TraceMeta:
    return TraceMeta(
        layers=layers,
        frames=frames,
        tokens_per_frame=tokens_per_frame,
        batch=batch,
        source="synthetic",
        source_detail=f"cosim.traces.synthetic seed {seed}",
        model=model,
        extra={"cfg": cfg, "cfg_layout": CFG_LAYOUT},
    )
