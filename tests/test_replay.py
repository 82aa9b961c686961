from pathlib import Path

import numpy as np
import pytest

from cosim.config import PolicySection, SyntheticSection
from cosim.traces import CFG_LAYOUT, read_trace
from cosim.traces.policies import apply_policy, cap_staleness, threshold_for_ratio
from cosim.traces.synthetic import synthetic_tas

N = 16
CAPTURED = Path(__file__).resolve().parent.parent / "workloads" / "traces" / "fastcar_tiny_b10.parquet"


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
    assert (replay[:2] == replay[2:]).all()  # the halves layout: row p + 2 is the CFG copy of row p


def test_cfg_coherent_pairs_the_copies_of_a_captured_trace():
    """On the shipped capture (CFG, batch 10 = 5 prompts: conditional rows 0-4, unconditional 5-9), a
    cfg_coherent policy decides row p together with row p + 5, on the mean of both rows' TAS. The pairing
    of rows (2p, 2p + 1) it replaced fails every part of this: it paired two conditional rows, and one
    prompt's conditional row with another prompt's unconditional one."""
    trace = read_trace(CAPTURED)
    m = trace.meta
    assert m.source == "captured" and m.extra["cfg"] is True and m.batch == 10
    assert m.extra["cfg_layout"] == CFG_LAYOUT  # the capture's prose spelling, read as the token
    n, half = m.tokens_per_frame, m.batch // 2
    tas = trace.tas_cube()
    policy = PolicySection(target_replay_ratio=0.5, cfg_coherent=True)
    replay, tau = apply_policy(tas, policy, n, 0, True)
    assert np.array_equal(replay[:half], replay[half:])
    assert 0.45 < replay.mean() < 0.55
    mean = (tas[:half].astype(np.float64) + tas[half:]) / 2
    want = np.nan_to_num(mean, nan=-np.inf) >= tau
    assert np.array_equal(replay[:half], want)
    # Both rows' TAS count: moving only the unconditional copy's TAS moves the conditional row's decisions.
    fixed = PolicySection(threshold=tau, cfg_coherent=True)
    for shift, expect in ((-1e3, False), (1e3, True)):
        moved = tas.copy()
        moved[half, :, n:] += np.float32(shift)  # prompt 0's unconditional copy
        again, _ = apply_policy(moved, fixed, n, 0, True)
        assert (again[0, :, n:] == expect).all() and (again[half, :, n:] == expect).all()
        assert np.array_equal(again[1:half], replay[1:half])  # the other prompts are untouched
    # Without the policy the copies decide apart, so the pairing is what makes them agree.
    alone, _ = apply_policy(tas, PolicySection(target_replay_ratio=0.5), n, 0, True)
    assert not np.array_equal(alone[:half], alone[half:])


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
