"""The baselines of examples/footage_predictability.py on videos whose answer is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location(
    "footage_predictability", Path(__file__).parents[1] / "examples" / "footage_predictability.py"
)
fp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fp)


def test_motion_copy_follows_a_pan_and_stands_still_on_noise():
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 1000, size=(8, 8 + 8))
    pan = np.stack([scene[:, t : t + 8] for t in range(8)])[None]  # content moves one token left per frame
    got = fp.motion_copy(pan)
    # every token but the right edge (new content) and the first rows (under 16 seen) is exact
    assert (got[:, :, 3:, :-1] == pan[:, 1:, 3:, :-1]).all()
    assert (got[:, :, 3:, :-1] != pan[:, :-1, 3:, :-1]).mean() > 0.9  # where a plain copy is wrong
    noise = rng.integers(0, 1000, size=(1, 4, 8, 8))
    assert (fp.motion_copy(noise) == noise[:, :-1]).all()  # no shift explains noise: copy


def test_most_frequent_next_counts_pairs():
    keys = np.array([1, 1, 1, 2, 2, 3])
    nxt = np.array([5, 7, 7, 9, 8, 4])
    assert fp.most_frequent_next(keys, nxt) == {1: 7, 2: 8, 3: 4}  # 2: a tie goes to the smaller token
