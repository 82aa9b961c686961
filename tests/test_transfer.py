"""Trace transfer keeps depth profile, spatial blobs, frame trends and CFG pairs; deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.traces import Trace, TraceMeta
from cosim.traces.transfer import grid_shape, transfer_trace


def _source(batch=4, layers=4, frames=4, n=16) -> Trace:
    """Layer l replays a fraction rising with l; a 'moving' 2x2 blob in the top-left never replays;
    conditional rows (first half) replay and unconditional rows differ on one layer."""
    rng = np.random.default_rng(0)
    tas = rng.normal(size=(batch, layers, frames * n)).astype(np.float32)
    replay = np.zeros((batch, layers, frames * n), bool)
    grid = np.zeros((4, 4), bool)
    grid[:2, :2] = True  # moving object
    moving = grid.ravel()
    for f in range(1, frames):
        for li in range(layers):
            base = np.zeros(n, bool)
            base[: int(n * (li + 1) / layers)] = True
            replay[:, li, f * n : (f + 1) * n] = base & ~moving
    replay[batch // 2 :, 0] = False  # uncond copies differ
    tas[:, :, :n] = np.nan
    meta = TraceMeta(
        layers=layers,
        frames=frames,
        tokens_per_frame=n,
        batch=batch,
        source="captured",
        source_detail="tiny.safetensors",
        extra={"cfg": True, "batch_labels": [0, 1, -1, -1]},
    )
    return Trace.from_arrays(tas, replay, meta, mlp_rel_error=rng.random((batch, layers, frames * n)))


def test_grid_shape():
    assert grid_shape(256) == (16, 16) and grid_shape(257) == (1, 257) and grid_shape(729) == (27, 27)
    assert grid_shape(2560) == (40, 64)


def test_shapes_metadata_and_first_frame():
    src = _source()
    out = transfer_trace(src, layers=32, tokens_per_frame=256, frames=8, batch=10, seed=1)
    m = out.meta
    assert (m.batch, m.layers, m.frames, m.tokens_per_frame) == (10, 32, 8, 256)
    assert m.source == "transferred" and m.source_detail == "tiny.safetensors"
    assert "transferred from tiny.safetensors" in m.label()
    assert not out.replay_cube()[:, :, :256].any()
    assert np.isnan(out.tas_cube()[:, :, :256]).all()
    assert "mlp_rel_error" in out.table.columns


def test_depth_profile_and_spatial_blob_are_preserved():
    src = _source()
    out = transfer_trace(src, layers=32, tokens_per_frame=256, frames=8, batch=10, seed=1)
    rep = out.replay_cube()[:5]  # conditional rows
    per_layer = rep[:, :, 256:].mean(axis=(0, 2))
    src_layer = src.replay_cube()[:2, :, 16:].mean(axis=(0, 2))
    np.testing.assert_allclose(per_layer, np.repeat(src_layer, 8), atol=1e-9)
    frames = rep.reshape(5, 32, 8, 16, 16)
    blob = np.zeros((16, 16), bool)
    blob[:8, :8] = True
    flipped = np.zeros((16, 16), bool)
    for b in range(5):
        never = ~frames[b, :, 1:].any(axis=(0, 1))
        # the moving blob is one 8x8 corner block of the 16x16 grid (mirrored for reused pairs)
        corners = [np.flip(blob, ax) if ax is not None else blob for ax in (None, 0, 1)] + [
            np.flip(blob, (0, 1))
        ]
        assert any((never & c).sum() == 64 for c in corners)
        flipped |= never & ~blob
    assert flipped.any()  # reused pairs are mirrored, not copied


def test_cfg_pairs_stay_together_and_determinism():
    src = _source()
    a = transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=10, seed=3)
    b = transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=10, seed=3)
    c = transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=10, seed=4)
    assert a.table.equals(b.table)
    assert (
        not a.table.equals(c.table)
        or a.meta.extra["transfer"]["row_map"] != c.meta.extra["transfer"]["row_map"]
    )
    rows = a.meta.extra["transfer"]["row_map"]
    for p in range(5):
        assert rows[p] + 2 == rows[p + 5]  # cond row p and uncond row p + B/2 from one source pair
    assert a.meta.extra["batch_labels"][5:] == [-1] * 5
    with pytest.raises(ValueError, match="even"):
        transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=5, seed=0)


def test_frame_trend_is_stretched_not_cycled():
    src = _source(frames=4)
    cube = src.replay_cube().copy()
    tas = src.tas_cube()
    cube[:, :, 16:32] = False  # frame 1 never replays, frames 2-3 do (rising trend)
    src2 = Trace.from_arrays(tas, cube, src.meta)
    out = transfer_trace(src2, layers=4, tokens_per_frame=16, frames=7, batch=4, seed=0)
    per_frame = out.replay_cube().reshape(4, 4, 7, 16).mean(axis=(0, 1, 3))
    assert out.meta.extra["transfer"]["frame_map"] == [0, 1, 1, 2, 2, 3, 3]
    assert per_frame[1] == per_frame[2] == 0 and per_frame[3] > 0
