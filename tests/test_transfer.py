"""Trace transfer resamples instead of copying: no duplicated layers or token blocks, neighbour agreement
as the source shows it per unit of depth / image distance / time, the depth profile, spatial blobs, frame
trends and CFG pairs kept; decisions re-made from the new TAS; target model in the metadata; deterministic.

The agreement tests run on the shipped capture (workloads/traces/fastcar_tiny_b10.parquet) mapped onto the
paper workload's dims, as ``trace.source: transfer`` does; the numbers are in docs/capture.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosim.config import WORKLOADS_DIR
from cosim.traces import Trace, TraceMeta, read_trace, threshold_for_ratio
from cosim.traces.transfer import grid_shape, transfer_trace

PAPER = dict(layers=32, tokens_per_frame=256, frames=8, batch=10)
TARGET_MODEL = {"name": "VILA-U 7B (256x256)", "layers": 32, "hidden": 4096, "heads": 32, "mlp_hidden": 11008}


def _source(batch=4, layers=4, frames=4, n=16, policy="tas") -> Trace:
    """TAS with structure a transfer must keep: a level rising with depth, a 'moving' 2x2 blob in the
    top-left of the 4x4 grid with low TAS, a smooth field persistent in time, and CFG copies that differ
    by a little noise. Decisions are TAS >= 0 (the stored tau)."""
    rng = np.random.default_rng(0)
    p = batch // 2
    grid = np.zeros((4, 4))
    grid[:2, :2] = -4.0  # moving object
    level = np.linspace(-1.0, 1.5, layers)[None, :, None, None, None]
    field = rng.normal(size=(p, layers, 1, 4, 4)) + 0.5 * rng.normal(size=(p, layers, frames, 4, 4))
    tas = level + grid + field
    tas = np.concatenate([tas, tas + 0.3 * rng.normal(size=tas.shape)]).reshape(batch, layers, frames * n)
    tas[:, :, :n] = np.nan
    meta = TraceMeta(
        layers=layers,
        frames=frames,
        tokens_per_frame=n,
        batch=batch,
        source="captured",
        source_detail="tiny.safetensors",
        policy=policy,
        threshold=0.0 if policy == "tas" else None,
        model={"name": "tiny", "layers": layers, "hidden": 16},
        extra={"cfg": True, "batch_labels": [0, 1, -1, -1], "quality": {"psnr_db": 20.0}},
    )
    replay = np.nan_to_num(tas, nan=-np.inf) >= 0
    err = rng.random((batch, layers, frames * n))
    err[:, :, :n] = np.nan
    return Trace.from_arrays(tas.astype(np.float32), replay, meta, mlp_rel_error=err)


def _grid(trace: Trace, cube: np.ndarray) -> np.ndarray:
    """(B, L, T * N) -> (B, L, T - 1, R, C): the eligible frames on the token grid."""
    m = trace.meta
    n = m.tokens_per_frame
    return cube[:, :, n:].reshape(m.batch, m.layers, m.frames - 1, *grid_shape(n))


def _at_half(trace: Trace) -> np.ndarray:
    """Decisions at a 50% replay target (one tau over the trace, as ``target_replay_ratio`` makes them)."""
    tas = trace.tas_cube().astype(np.float64)
    return _grid(trace, np.where(np.isnan(tas), False, tas >= threshold_for_ratio(tas, 0.5)))


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.fixture(scope="module")
def shipped():
    src = read_trace(WORKLOADS_DIR / "traces" / "fastcar_tiny_b10.parquet")
    return src, transfer_trace(src, seed=0, model=TARGET_MODEL, **PAPER)


def test_grid_shape():
    assert grid_shape(256) == (16, 16) and grid_shape(257) == (1, 257) and grid_shape(729) == (27, 27)
    assert grid_shape(2560) == (40, 64)


def test_shapes_metadata_and_first_frame():
    src = _source()
    out = transfer_trace(src, seed=1, model=TARGET_MODEL, **PAPER)
    m = out.meta
    assert (m.batch, m.layers, m.frames, m.tokens_per_frame) == (10, 32, 8, 256)
    assert m.source == "transferred" and m.source_detail == "tiny.safetensors"
    assert "transferred from tiny.safetensors" in m.label()
    assert m.model == TARGET_MODEL  # the target model, not the source's
    t = m.extra["transfer"]
    assert t["source_model"] == src.meta.model and t["source_detail"] == "tiny.safetensors"
    assert t["from"] == {"layers": 4, "tokens_per_frame": 16, "frames": 4, "batch": 4}
    assert t["to"] == PAPER and t["seed"] == 1 and "resampled" in t["method"]
    assert t["source_extra"]["quality"] == {"psnr_db": 20.0} and "quality" not in m.extra  # not the target's
    assert m.extra["cfg"] is True and len(t["correlations"]["depth"]) == 3
    # without target dims only the layer count is known; the source's dims never pose as the target's
    assert transfer_trace(src, seed=1, **PAPER).meta.model == {"layers": 32}
    assert not out.replay_cube()[:, :, :256].any()
    assert np.isnan(out.tas_cube()[:, :, :256]).all() and np.isfinite(out.tas_cube()[:, :, 256:]).all()
    err = out._cube("mlp_rel_error")
    assert np.isnan(err[:, :, :256]).all() and (err[:, :, 256:] >= 0).all()


def test_workload_transfer_names_the_workload_model(tmp_path):
    from cosim.config import load_workload
    from cosim.traces import load_trace

    w = load_workload(WORKLOADS_DIR / "fastcar_vilau7b_u280_transferred.yaml")
    meta = load_trace(w).trace.meta
    assert meta.model["layers"] == 32 and meta.model["hidden"] == w.model.hidden == 4096
    assert meta.model["name"] == w.model.name
    assert meta.extra["transfer"]["source_model"]["name"] == "fastcar-tiny"
    assert Path(meta.extra["transfer"]["source_path"]).name == "fastcar_tiny_b10.parquet"


def test_no_layer_row_or_token_block_is_a_copy(shipped):
    _, out = shipped
    tas = _grid(out, out.tas_cube())  # (10, 32, 7, 16, 16)
    for a in range(32):
        for b in range(a + 1, 32):
            assert not np.array_equal(tas[:, a], tas[:, b]), (a, b)
    for a in range(10):
        for b in range(a + 1, 10):
            assert not np.array_equal(tas[a], tas[b]), (a, b)
    corner = tas[..., ::2, ::2]
    same = (
        (corner == tas[..., 1::2, ::2]) & (corner == tas[..., ::2, 1::2]) & (corner == tas[..., 1::2, 1::2])
    )
    # four equal values in a 2x2 block happen only where the source itself has long runs of one TAS
    # value (its layer 0): a handful of 143,360 blocks, where a copy makes every block so
    assert same.mean() < 1e-3
    rep = _at_half(out)
    whole = (rep[..., ::2, ::2] == rep[..., 1::2, ::2]) & (rep[..., ::2, ::2] == rep[..., ::2, 1::2])
    whole &= rep[..., ::2, ::2] == rep[..., 1::2, 1::2]
    assert whole.mean() < 0.9


def test_neighbouring_layers_agree_as_the_source_does_per_unit_of_depth(shipped):
    """At a 50% target: consecutive source layers (1/6 of the depth apart) agree on 53.5% of their
    decisions; target layers 5-6 apart (the same depth) agree about as often, and consecutive target
    layers (1/32 apart) more, but not as the 92.6% of copied runs."""
    src, out = shipped
    s, t = _at_half(src), _at_half(out)
    source_lag1 = _agree(s[:, 1:], s[:, :-1])
    assert source_lag1 == pytest.approx(0.535, abs=0.002)
    same_depth = (_agree(t[:, 5:], t[:, :-5]) + _agree(t[:, 6:], t[:, :-6])) / 2
    assert abs(same_depth - source_lag1) < 0.06
    lag1 = _agree(t[:, 1:], t[:, :-1])
    assert same_depth < lag1 < 0.88
    # without the depth profile's help (each layer split at its own median), no consecutive pair is a copy
    tas = _grid(out, out.tas_cube())
    med = np.median(tas.transpose(1, 0, 2, 3, 4).reshape(32, -1), axis=1)
    above = tas > med[None, :, None, None, None]
    assert max(_agree(above[:, i], above[:, i + 1]) for i in range(31)) < 0.95


def test_neighbouring_tokens_frames_and_cfg_copies_agree_as_in_the_source(shipped):
    src, out = shipped
    s, t = _at_half(src), _at_half(out)
    # target cells 2 apart are one source cell apart (16 x 16 on 8 x 8): they agree as source neighbours
    assert abs(_agree(t[..., 2:], t[..., :-2]) - _agree(s[..., 1:], s[..., :-1])) < 0.03
    assert abs(_agree(t[..., 2:, :], t[..., :-2, :]) - _agree(s[..., 1:, :], s[..., :-1, :])) < 0.03
    # the two cells of a former 2x2 block agree no more than neighbours across blocks do
    within, across = _agree(t[..., 0::2], t[..., 1::2]), _agree(t[..., 1:-1:2], t[..., 2::2])
    assert within < 0.97 and abs(within - across) < 0.03
    within, across = _agree(t[..., 0::2, :], t[..., 1::2, :]), _agree(t[..., 1:-1:2, :], t[..., 2::2, :])
    assert within < 0.97 and abs(within - across) < 0.03
    # frames (8 -> 8) and the CFG copies (rows p and p + 5) as in the source
    assert abs(_agree(t[:, :, 1:], t[:, :, :-1]) - _agree(s[:, :, 1:], s[:, :, :-1])) < 0.04
    assert abs(_agree(t[:5], t[5:]) - _agree(s[:5], s[5:])) < 0.04


def test_depth_profile_is_preserved(shipped):
    src, out = shipped
    s, t = _at_half(src).mean(axis=(0, 2, 3, 4)), _at_half(out).mean(axis=(0, 2, 3, 4))
    at_source_depths = np.interp((np.arange(6) + 0.5) / 6, (np.arange(32) + 0.5) / 32, t)
    assert np.corrcoef(s, at_source_depths)[0, 1] > 0.99
    assert np.abs(s - at_source_depths).max() < 0.06


def test_marginals_at_source_depths_and_stored_decisions():
    """A target layer at a source layer's depth has its TAS distribution; stored decisions are the
    source's tau on the new TAS; a non-TAS source policy keeps its per-layer shares."""
    src = _source()
    same = transfer_trace(src, layers=12, tokens_per_frame=64, frames=4, batch=4, seed=2)
    s, t = _grid(src, src.tas_cube()), _grid(same, same.tas_cube())
    for sl, tl in ((0, 1), (1, 4), (2, 7), (3, 10)):  # 12 on 4 layers: depths (3l + 1.5) / 12 coincide
        q = [0.1, 0.3, 0.5, 0.7, 0.9]
        np.testing.assert_allclose(np.quantile(t[:, tl], q), np.quantile(s[:, sl], q), atol=0.06)
    mid = np.quantile(t[:, 2], 0.5), np.quantile(t[:, 3], 0.5)  # between source layers 0 and 1
    assert np.quantile(s[:, 0], 0.5) < min(mid) and max(mid) < np.quantile(s[:, 1], 0.5)
    tas = same.tas_cube()
    assert same.meta.policy == "tas" and same.meta.threshold == 0.0
    np.testing.assert_array_equal(same.replay_cube(), np.nan_to_num(tas, nan=-np.inf) >= 0)
    rnd = transfer_trace(_source(policy="random"), layers=8, tokens_per_frame=64, frames=4, batch=4, seed=2)
    share = src.replay_cube()[:, :, 16:].mean(axis=(0, 2))
    got = rnd.replay_cube()[:, :, 64:].mean(axis=(0, 2))
    assert got[0] == pytest.approx(share[0], abs=0.01) and got[-1] == pytest.approx(share[-1], abs=0.01)
    assert isinstance(rnd.meta.threshold, list) and len(rnd.meta.threshold) == 8
    assert "random" in rnd.meta.extra["transfer"]["decisions"]


def test_spatial_blob_and_frame_trend_are_kept():
    src = _source()
    out = transfer_trace(src, layers=8, tokens_per_frame=256, frames=7, batch=4, seed=0)
    rep = _grid(out, out.replay_cube().astype(float))  # (4, 8, 6, 16, 16)
    per_cell = rep.mean(axis=(0, 1, 2))
    # source cells 0-1 of 4 (the blob) are centred on target cells 1.5 and 5.5, cell 2 on 9.5: the core
    # [0, 6) of the blob stays low, everything from cell 10 on (beyond the interpolated edge) stays high
    core, far = per_cell[:6, :6].mean(), np.concatenate([per_cell[10:].ravel(), per_cell[:10, 10:].ravel()])
    assert core < 0.3 and far.mean() > 0.45 and core < far.mean() / 1.6
    cube = src.tas_cube().copy()
    cube[:, :, 16:32] -= 6.0  # frame 1 replays almost nothing, frames 2-3 as before: a rising trend
    trend = Trace.from_arrays(cube, np.nan_to_num(cube, nan=-np.inf) >= 0, src.meta)
    out = transfer_trace(trend, layers=4, tokens_per_frame=16, frames=7, batch=4, seed=0)
    per_frame = out.replay_cube().reshape(4, 4, 7, 16).mean(axis=(0, 1, 3))
    # eligible source frames 1-3 stretch over target frames 1-6: frame 1 of 7 lies before source frame 1's
    # position, frames 3-6 beyond source frame 2's (not cycled: no low frame comes back)
    assert per_frame[0] == 0 and per_frame[1] < 0.1 and per_frame[3:].min() > 0.15
    assert per_frame[3:].mean() > 0.3


def test_cfg_pairs_and_determinism():
    src = _source()
    a = transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=10, seed=3)
    b = transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=10, seed=3)
    c = transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=10, seed=4)
    assert a.table.equals(b.table) and a.meta == b.meta
    assert not np.array_equal(a.tas_cube()[:, :, 64:], c.tas_cube()[:, :, 64:])
    rows = a.meta.extra["transfer"]["row_map"]
    for p in range(5):
        assert rows[p] + 2 == rows[p + 5]  # cond row p and uncond row p + B/2 from one source pair
    assert a.meta.extra["batch_labels"][5:] == [-1] * 5
    tas = _grid(a, a.tas_cube())
    pair = np.corrcoef(tas[:5].ravel(), tas[5:].ravel())[0, 1]
    other = np.corrcoef(tas[:5].ravel(), np.roll(tas[5:], 1, axis=0).ravel())[0, 1]
    assert pair > 0.8 and pair > other + 0.2  # the two copies of a prompt stay correlated
    with pytest.raises(ValueError, match="even"):
        transfer_trace(src, layers=8, tokens_per_frame=64, frames=6, batch=5, seed=0)


def test_mlp_error_keeps_its_distribution_and_missing_entries():
    src = _source()
    err = src._cube("mlp_rel_error").copy()
    err[:, :, 16:] = np.where(np.arange(16) < 4, np.nan, err[:, :, 16:].reshape(4, 4, 3, 16)).reshape(
        4, 4, 48
    )
    src = Trace.from_arrays(src.tas_cube(), src.replay_cube(), src.meta, mlp_rel_error=err)
    out = transfer_trace(src, layers=8, tokens_per_frame=64, frames=4, batch=4, seed=0)
    e = _grid(out, out._cube("mlp_rel_error"))  # (4, 8, 3, 8, 8)
    assert np.isnan(e[..., :2, :]).all() and np.isfinite(e[..., 2:, :]).all()  # source row 0 unmeasured
    measured = err[:, :, 16:][np.isfinite(err[:, :, 16:])]
    assert np.nanmin(e) >= measured.min() and np.nanmax(e) <= measured.max()
    assert np.nanmedian(e) == pytest.approx(np.median(measured), abs=0.05)
