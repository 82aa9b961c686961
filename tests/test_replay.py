import numpy as np
import pytest

from cosim.config import PolicySection, SyntheticSection
from cosim.traces.policies import apply_policy, cap_staleness, threshold_for_ratio
from cosim.traces.synthetic import synthetic_tas

N = 16


@pytest.fixture(scope="module")
def tas():
    return synthetic_tas(
        batch=4, layers=6, frames=5, tokens_per_frame=N, cfg=True, knobs=SyntheticSection(), seed=3
    )


@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.8])
def test_threshold_hits_the_target_ratio_counted_over_all_entries(tas, target):
    tau = threshold_for_ratio(tas, target)
    replay = np.nan_to_num(tas, nan=-np.inf) >= tau
    assert replay.sum() == round(target * tas.size)  # continuous TAS: no ties


def test_threshold_beyond_the_eligible_share_is_an_error(tas):
    with pytest.raises(ValueError, match="can replay"):
        threshold_for_ratio(tas, 0.9)  # frame 0 of 5 is NaN: at most 80%


def test_lower_tau_never_lowers_the_replay_ratio(tas):
    ratios = [
        apply_policy(tas, PolicySection(threshold=t), N, 0, True)[0].mean() for t in np.linspace(0, -8, 17)
    ]
    assert all(b >= a for a, b in zip(ratios, ratios[1:], strict=False))
    assert ratios[-1] > ratios[0]


@pytest.mark.parametrize("kind", ["tas", "topk", "random"])
def test_budgeted_policies_respect_the_budget_and_never_replay_frame_0(tas, kind):
    replay, _ = apply_policy(tas, PolicySection(kind=kind, target_replay_ratio=0.4), N, 0, True)
    assert replay[:, :, :N].sum() == 0
    assert replay.mean() == pytest.approx(0.4, abs=0.01)


def test_fixed_interval_and_dense(tas):
    replay, _ = apply_policy(tas, PolicySection(kind="fixed_interval", interval=2), N, 0, True)
    frames = replay.reshape(4, 6, 5, N).all(axis=(0, 1, 3))
    assert frames.tolist() == [False, True, False, True, False]
    assert not apply_policy(tas, PolicySection(kind="dense"), N, 0, True)[0].any()


def test_cfg_coherent_copies_agree(tas):
    replay, _ = apply_policy(tas, PolicySection(target_replay_ratio=0.5, cfg_coherent=True), N, 0, True)
    assert (replay[0::2] == replay[1::2]).all()


def test_staleness_cap_limits_runs():
    replay = np.zeros((1, 1, 6 * 2), dtype=bool)
    replay[..., 2:] = True  # frames 1-5 replay at both positions
    capped = cap_staleness(replay, 2, 2).reshape(6, 2)[:, 0]
    assert capped.tolist() == [False, True, True, False, True, True]
    once = cap_staleness(replay, 2, 1).reshape(6, 2)[:, 0]
    assert once.tolist() == [False, True, False, True, False, True]


def test_per_layer_thresholds(tas):
    taus = [0.0, -2.0, -4.0, -6.0, -8.0, -10.0]
    replay, tau = apply_policy(tas, PolicySection(threshold=taus), N, 0, True)
    assert tau == taus
    per_layer = replay.mean(axis=(0, 2))
    assert all(b >= a for a, b in zip(per_layer, per_layer[1:], strict=False))  # lower tau, more replay
    layer2 = np.nan_to_num(tas[:, 2], nan=-np.inf) >= -4.0
    assert np.array_equal(replay[:, 2], layer2)


@pytest.mark.parametrize("target", [0.2, 0.5, 0.7])
def test_fixed_interval_at_a_budget_meets_it_on_any_trace(tas, target):
    """A target on fixed_interval is the budget of a staggered schedule (as in a live capture), not
    silently replaced by the default interval."""
    policy = PolicySection(kind="fixed_interval", target_replay_ratio=target)
    replay, _ = apply_policy(tas, policy, N, seed=0, cfg=True)
    assert not replay[..., :N].any()  # frame 0 never replays
    # Each position replays on its own Bresenham schedule: the total is the budget up to one frame per
    # (layer, token) position, i.e. within 1/frames of the target.
    assert abs(replay.mean() - target) <= 1 / 5
    assert abs(replay.mean() - target) < 0.03  # and on these sizes, much closer
    per_position = replay[0].reshape(6, 5, N).sum(axis=1)  # replays per (layer, token) over the frames
    assert per_position.max() - per_position.min() <= 1  # staggered evenly, not whole frames at once
    assert (replay == replay[:1]).all()  # content-blind: the same for every batch entry
