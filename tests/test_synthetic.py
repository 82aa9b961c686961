import numpy as np

from cosim.config import SyntheticSection
from cosim.traces import CFG_LAYOUT
from cosim.traces.synthetic import grid_shape, layer_profile, motion_maps, synthetic_meta, synthetic_tas


def test_structure_matches_the_paper():
    knobs = SyntheticSection()
    tas = synthetic_tas(batch=4, layers=16, frames=6, tokens_per_frame=64, cfg=True, knobs=knobs, seed=0)
    assert np.isnan(tas[:, :, :64]).all() and not np.isnan(tas[:, :, 64:]).any()
    per_layer = np.nanmean(tas, axis=(0, 2))
    assert per_layer[0] > per_layer[8] and per_layer[-1] > per_layer[8]  # shallow/deep above middle
    # CFG copies see one video: their TAS correlates far more than two different videos'.
    later = tas[:, :, 64:].reshape(4, -1)
    assert np.corrcoef(later[0], later[2])[0, 1] > np.corrcoef(later[0], later[1])[0, 1] + 0.2


def test_cfg_copies_in_the_halves_layout():
    """The cond/uncond copies of prompt p are rows p and p + P, as a capture lays them out (models/fastcar.py,
    extra.cfg_layout: halves): each row correlates most with its copy half a batch away."""
    knobs = SyntheticSection()
    prompts = 4
    tas = synthetic_tas(
        batch=2 * prompts, layers=6, frames=4, tokens_per_frame=16, cfg=True, knobs=knobs, seed=1
    )
    later = tas[:, :, 16:].reshape(2 * prompts, -1)
    corr = np.corrcoef(later)
    np.fill_diagonal(corr, -np.inf)
    assert corr.argmax(axis=1).tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    copies = np.diag(corr[:prompts, prompts:])
    others = corr[:prompts, prompts:][~np.eye(prompts, dtype=bool)]
    assert copies.min() > 0.8 and others.max() < 0.5


def test_synthetic_trace_records_its_layout():
    for cfg in (True, False):
        meta = synthetic_meta(batch=4, layers=2, frames=2, tokens_per_frame=4, cfg=cfg, model={}, seed=0)
        assert meta.extra == {"cfg": cfg, "cfg_layout": CFG_LAYOUT} and CFG_LAYOUT == "halves"


def test_moving_tokens_score_lower():
    rng = np.random.default_rng(0)
    cover = motion_maps(6, 64, 0.2, rng)
    assert cover.shape == (6, 64) and cover.max() > 0.9
    knobs = SyntheticSection(noise=0.0, cfg_noise=0.0)
    tas = synthetic_tas(batch=1, layers=1, frames=6, tokens_per_frame=64, cfg=False, knobs=knobs, seed=0)
    cover = motion_maps(6, 64, knobs.moving_fraction, np.random.default_rng(0))
    moving = np.maximum(cover[1:], cover[:-1]) > 0.5
    later = tas[0, 0].reshape(6, 64)[1:]
    assert later[moving].mean() < later[~moving].mean() - 1.0


def test_helpers():
    assert grid_shape(256) == (16, 16) and grid_shape(257) == (1, 257) and grid_shape(2560) == (40, 64)
    assert layer_profile(5, 0.0).tolist() == [-2.0] * 5


def test_same_seed_same_trace():
    kw = dict(batch=2, layers=3, frames=3, tokens_per_frame=16, cfg=True, knobs=SyntheticSection())
    assert np.array_equal(synthetic_tas(**kw, seed=5), synthetic_tas(**kw, seed=5), equal_nan=True)
    assert not np.array_equal(synthetic_tas(**kw, seed=5), synthetic_tas(**kw, seed=6), equal_nan=True)
