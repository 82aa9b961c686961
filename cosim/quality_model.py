"""Quality estimates for design-space sweeps: measured PSNR/SSIM vs policy and replay ratio, interpolated.

A sweep point has a policy and a replay ratio but no decoded video, and a live capture per point is far
too slow. So quality comes from a table measured once on the shipped fastcar-tiny checkpoint (32 x 32 RGB,
8 frames x 8 x 8 tokens; ``python -m models.quality_table``, provenance in ``data/quality_tiny.json``):
per policy and target ratio, the mean over sampling seeds of each capture's quality against the dense
decode with the same seed (docs/capture.md). These are *estimates* from a toy model, not VILA-U numbers
and not a prediction for a big preset; docs/metrics.md says how to read them.

Ratio 0 is the dense decode for every policy: identical videos, which the capture reports as PSNR 100 dB
(its cap, :data:`models.capture.PSNR_IDENTICAL_DB`) and SSIM 1. The measured curve falls steeply from
there (about 22 dB free-running at 5% replay), so between 0 and the first measured ratio (0.05) the
interpolated PSNR mixes the 100 dB sentinel with a real value and means little.
"""

from __future__ import annotations

import csv
import json
import math
from functools import cache
from importlib.resources import files
from typing import Any

import numpy as np

TABLE = "quality_tiny.csv"
PROVENANCE = "quality_tiny.json"
#: estimate() key -> metric column of the table (the ``<column>_mean`` values are interpolated)
KEYS = {
    "quality_psnr_db": "psnr_db",
    "quality_ssim": "ssim",
    "quality_forced_psnr_db": "forced_psnr_db",
    "quality_forced_ssim": "forced_ssim",
}
LABEL = "estimate: measured on fastcar-tiny captures (cosim/data/quality_tiny.csv), not on VILA-U"


def _data(name: str) -> str:
    return files("cosim").joinpath("data", name).read_text()


@cache
def table() -> tuple[dict[str, str], ...]:
    """The shipped summary table, one dict of CSV strings per (policy, target) row."""
    return tuple(csv.DictReader(_data(TABLE).splitlines()))


@cache
def provenance() -> dict[str, Any]:
    """How the table was produced: command, checkpoint sha256, capture settings, date."""
    return json.loads(_data(PROVENANCE))


@cache
def _curves() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Per policy: achieved replay ratios (increasing, starting at the dense 0) and the metric means."""
    rows = table()
    dense = [r for r in rows if r["policy"] == "dense"]
    if len(dense) != 1:
        raise RuntimeError(f"{TABLE}: expected one dense row, found {len(dense)}")
    curves = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        pts = dense + [r for r in rows if r["policy"] == policy and r is not dense[0]]
        x = np.array([float(r["replay_ratio_mean"]) for r in pts])
        ys = {c: np.array([float(r[f"{c}_mean"]) for r in pts]) for c in KEYS.values()}
        # achieved ratios may tie (e.g. two targets at tas's ceiling): average them, np.interp needs x to rise
        ux, inv = np.unique(x, return_inverse=True)
        n = np.bincount(inv)
        curves[policy] = (ux, {c: np.bincount(inv, weights=y) / n for c, y in ys.items()})
    return curves


def known_policies() -> tuple[str, ...]:
    return tuple(_curves())


def estimate(policy: str, replay_ratio: float) -> dict[str, float | bool]:
    """Estimated quality vs dense of a decode with ``policy`` replaying ``replay_ratio`` of the MLPs.

    Piecewise-linear in the achieved replay ratio between the table's per-policy means (noisy data: not
    forced monotone). Beyond the highest measured ratio (0.875 = 7/8 for the tiny model's 8 frames, about
    0.8747 for tas) the last measured value is returned and ``quality_extrapolated`` is True; a ratio in
    the measured range gives False. ``dense`` is ratio 0 whatever ``replay_ratio`` says (it replays
    nothing). PSNR in dB (100 = identical videos), SSIM in [0, 1]; ``forced_*`` = fed the dense video, the
    per-step damage without drift. Keys: ``quality_psnr_db``, ``quality_ssim``, ``quality_forced_psnr_db``,
    ``quality_forced_ssim``, ``quality_extrapolated``.
    """
    curves = _curves()
    if policy not in curves:
        raise ValueError(f"unknown policy {policy!r} for the quality table; known: {', '.join(curves)}")
    r = float(replay_ratio)
    if not math.isfinite(r) or not 0.0 <= r <= 1.0:
        raise ValueError(f"replay_ratio must be in [0, 1], got {replay_ratio!r}")
    x, ys = curves[policy]
    if policy == "dense":
        r = 0.0
    extrapolated = r > x[-1]
    out: dict[str, float | bool] = {
        key: float(np.interp(min(r, x[-1]), x, ys[col])) for key, col in KEYS.items()
    }
    out["quality_extrapolated"] = bool(extrapolated)
    return out
