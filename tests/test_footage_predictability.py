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


def test_dead_band_zero_is_the_plain_encoding_and_a_band_only_removes_changes():
    import torch

    from models.fsq import FSQTokenizer

    torch.manual_seed(0)
    tok = FSQTokenizer().eval()
    with torch.no_grad():  # an untrained encoder's latents sit near 0: spread them over the levels
        tok.encoder[-1].weight.mul_(60)
    frame = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3))
    drift = np.random.default_rng(2).integers(-12, 13, size=(2, 6, 64, 64, 3))  # small changes per frame
    videos = np.clip(frame + np.cumsum(drift, axis=1), 0, 255).astype(np.uint8)
    plain, mse = fp.encode_dead_band(tok, videos, 0.0)
    assert (plain == tok.encode(videos).numpy()).all()
    banded, banded_mse = fp.encode_dead_band(tok, videos, 0.3)
    changes = lambda c: (c[:, 1:] != c[:, :-1]).mean()  # noqa: E731
    assert changes(banded) < changes(plain)
    assert (banded[:, 0] == plain[:, 0]).all()  # the first frame has nothing to hold on to


def test_copy_nll_is_the_mean_surprise_of_copying_as_a_distribution():
    from models.train_footage import copy_nll

    prev = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    truth = np.array([0, 1, 2, 3, 0, 1, 3, 0])  # copy right on 6 of 8
    p_copy, p_other = 0.75, 0.25 / 3  # 4 codes: the previous one at its accuracy, the others uniformly
    surprise = -np.log(np.where(prev == truth, p_copy, p_other))
    assert np.isclose(copy_nll(0.75, 4), surprise.mean())
    assert copy_nll(1.0, 4) == 0.0


def test_transition_nll_learns_a_deterministic_chain_and_is_surprised_by_its_breach():
    codes = 5
    train_prev = np.tile(np.arange(codes), 200)
    train_next = (train_prev + 1) % codes  # each code is always followed by the next one
    prev = np.arange(codes)
    nll, lam = fp.transition_nll(train_prev, train_next, prev, (prev + 1) % codes, codes)
    assert nll < 0.01 and lam == 0.005  # the least smoothing wins on a law that holds
    breach, _ = fp.transition_nll(train_prev, train_next, prev, prev, codes)  # every code repeats instead
    assert breach > -np.log(0.05)  # a repeat was never counted: only the smoothing gives it mass
