import numpy as np

from cosim.config import SyntheticSection
from cosim.traces.synthetic import grid_shape, layer_profile, motion_maps, synthetic_tas


def test_structure_matches_the_paper():
    knobs = SyntheticSection()
    tas = synthetic_tas(batch=4, layers=16, frames=6, tokens_per_frame=64, cfg=True, knobs=knobs, seed=0)
    assert np.isnan(tas[:, :, :64]).all() and not np.isnan(tas[:, :, 64:]).any()
    per_layer = np.nanmean(tas, axis=(0, 2))
    assert per_layer[0] > per_layer[8] and per_layer[-1] > per_layer[8]  # shallow/deep above middle
    # CFG copies see one video: their TAS correlates far more than two different videos'.
    later = tas[:, :, 64:].reshape(4, -1)
    assert np.corrcoef(later[0], later[1])[0, 1] > np.corrcoef(later[0], later[2])[0, 1] + 0.2


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
