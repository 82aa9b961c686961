"""FastCar inside the decode loop: TAS, real MLP skipping, the shared rules, and policy budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.fastcar import (
    DecodeOptions,
    SamplingOptions,
    attention_positions,
    decode,
    temporal_attention_score,
)
from models.policies import DensePolicy, TasPolicy, frame_quotas, make_policy, threshold_for_ratio
from models.testing import tiny_model
from models.transformer import apply_rope

LABELS = [0, 2]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _rows_counter(model):
    """Wrap every layer's MLP to count the rows it is really evaluated on."""
    counts = {"rows": 0}
    for layer in model.model.layers:
        inner = layer.mlp.forward

        def counted(x, inner=inner):
            counts["rows"] += x.shape[0]
            return inner(x)

        layer.mlp.forward = counted
    return counts


def test_tas_matches_hand_computation_on_fixed_tensors():
    # 1 row, 4 query heads, 2 KV heads (GQA groups of 2), head_dim 2
    q = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [3.0, -1.0], [1.0, 1.0]]])
    k = torch.tensor([[[2.0, 1.0], [-1.0, 4.0]]])
    # heads 0,1 use k0=(2,1): 1*2+2*1=4, 0*2+1*1=1 ; heads 2,3 use k1=(-1,4): -3-4=-7, -1+4=3
    expected = (4 + 1 - 7 + 3) / 4 / math.sqrt(2)
    got = temporal_attention_score(q, k, 1 / math.sqrt(2))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_logged_tas_matches_layer0_recomputed_from_tokens():
    """Layer 0's query/key depend only on the input tokens, so TAS can be recomputed outside the loop."""
    model = tiny_model()
    n = model.config.tokens_per_frame
    res = decode(model, [1], policy=DensePolicy(), sampling=SamplingOptions(cfg=False, seed=3))
    ids = model.input_ids(torch.tensor([1]), res.tokens)[0]
    layer = model.model.layers[0]
    att = layer.self_attn
    d = model.config.dims
    h = layer.input_layernorm(model.model.embed_tokens(ids))
    with torch.no_grad():
        q = att.q_proj(h).view(-1, d.heads, d.head_dim)
        k = att.k_proj(h).view(-1, d.kv_heads, d.head_dim)
    pos = torch.arange(len(ids))
    q = apply_rope(q, model.rope_cos[pos][:, None], model.rope_sin[pos][:, None])
    k = apply_rope(k, model.rope_cos[pos][:, None], model.rope_sin[pos][:, None])
    for s in (n, n + 1, 2 * n + 3):
        g = d.heads // d.kv_heads
        manual = np.mean([float(q[s, hh] @ k[s - n, hh // g]) for hh in range(d.heads)]) / math.sqrt(
            d.head_dim
        )
        assert res.tas[0, 0, s] == pytest.approx(manual, rel=1e-4, abs=1e-5)
    assert np.isnan(res.tas[:, :, :n]).all()
    assert not np.isnan(res.tas[:, :, n:]).any()


def test_pre_rope_query_variant_changes_tas():
    model = tiny_model()
    a = decode(model, LABELS, policy=DensePolicy())
    b = decode(model, LABELS, policy=DensePolicy(), options=DecodeOptions(query_pre_rope=True))
    n = model.config.tokens_per_frame
    assert not np.allclose(a.tas[:, :, n:], b.tas[:, :, n:])
    assert torch.equal(a.tokens, b.tokens)  # dense: the variant only changes the score


def test_replay_really_skips_the_mlp_and_first_frame_never_replays():
    model = tiny_model()
    cfg = model.config
    counts = _rows_counter(model)
    res = decode(model, LABELS, policy=TasPolicy(-math.inf))
    b, layers, n = 2 * len(LABELS), cfg.dims.layers, cfg.tokens_per_frame
    assert not res.replay[:, :, :n].any()
    assert res.replay[:, :, n:].all()
    assert counts["rows"] == res.mlp_rows == b * layers * n  # only frame 0 computed
    counts["rows"] = 0
    dense = decode(model, LABELS, policy=DensePolicy())
    assert counts["rows"] == b * layers * cfg.frames * n
    assert not dense.replay.any()


def test_dense_policy_is_bit_identical_to_plain_model():
    model = tiny_model()
    samp = SamplingOptions(seed=5)
    plain = decode(model, LABELS, policy=None, sampling=samp, keep_logits=True)
    dense = decode(model, LABELS, policy=DensePolicy(), sampling=samp, keep_logits=True)
    assert torch.equal(plain.tokens, dense.tokens)
    assert torch.equal(plain.logits, dense.logits)


def test_kv_cache_decode_matches_teacher_forced_forward():
    model = tiny_model()
    res = decode(model, [0, 1], sampling=SamplingOptions(cfg=False, temperature=0), keep_logits=True)
    full = model(model.input_ids(torch.tensor([0, 1]), res.tokens))[:, :, : model.config.codebook_size]
    torch.testing.assert_close(res.logits, full, rtol=1e-4, atol=1e-4)


def test_lower_tau_never_lowers_replay_ratio():
    model = tiny_model()
    dense = decode(model, LABELS, policy=DensePolicy())
    taus = np.quantile(dense.tas[~np.isnan(dense.tas)], [0.9, 0.7, 0.5, 0.3, 0.1])
    ratios = [decode(model, LABELS, policy=TasPolicy(float(t))).replay.mean() for t in taus]
    assert all(b >= a for a, b in zip(ratios, ratios[1:], strict=False))
    assert ratios[-1] > ratios[0]


def test_strict_compare_differs_only_at_equality():
    model = tiny_model()
    dense = decode(model, LABELS, policy=DensePolicy())
    tau = float(dense.tas[0, 0, model.config.tokens_per_frame])  # a value that occurs exactly
    ge = TasPolicy(tau)
    gt = TasPolicy(tau, strict=True)
    from models.policies import DecisionContext

    ctx = DecisionContext(
        0, 4, 1, 0, torch.tensor([tau, tau - 1, tau + 1]), torch.ones(3, dtype=torch.bool), None, None
    )
    assert ge.wants_replay(ctx).tolist() == [True, False, True]
    assert gt.wants_replay(ctx).tolist() == [False, False, True]


@pytest.mark.parametrize("cap", [1, 2])
def test_staleness_cap_and_no_twice_in_row(cap):
    model = tiny_model(frames=5)
    n = model.config.tokens_per_frame
    res = decode(model, LABELS, policy=TasPolicy(-math.inf), options=DecodeOptions(staleness_cap=cap))
    rep = res.replay.reshape(*res.replay.shape[:2], -1, n)  # (B, L, T, N)
    run = np.zeros(rep.shape[:2] + (n,), int)
    longest = 0
    for f in range(rep.shape[2]):
        run = np.where(rep[:, :, f], run + 1, 0)
        longest = max(longest, run.max())
    assert longest == cap
    twice = decode(model, LABELS, policy=TasPolicy(-math.inf), options=DecodeOptions(no_twice_in_row=True))
    r2 = twice.replay.reshape(rep.shape)
    assert not (r2[:, :, 1:] & r2[:, :, :-1]).any()
    assert r2[:, :, 1].all() and not r2[:, :, 2].any()


def test_cfg_coherent_pairs_decide_together():
    model = tiny_model()
    dense = decode(model, LABELS, policy=DensePolicy())
    tau = float(np.nanmedian(dense.tas))
    p = len(LABELS)
    free = decode(model, LABELS, policy=TasPolicy(tau))
    assert (free.replay[:p] != free.replay[p:]).any()  # copies decide on their own by default
    coh = decode(model, LABELS, policy=TasPolicy(tau), options=DecodeOptions(cfg_coherent=True))
    assert np.array_equal(coh.replay[:p], coh.replay[p:])


@pytest.mark.parametrize("name", ["fixed_interval", "random", "input_similarity", "topk", "oracle"])
@pytest.mark.parametrize("target", [0.3, 0.6])
def test_budgeted_policies_meet_their_budget(name, target):
    model = tiny_model(frames=4)
    cfg = model.config
    res = decode(model, LABELS, policy=make_policy(name, target_replay_ratio=target))
    exact = frame_quotas(target, cfg.frames, cfg.tokens_per_frame).sum() / (cfg.frames * cfg.tokens_per_frame)
    assert res.replay.mean() == pytest.approx(exact, abs=0.5 / (cfg.frames * cfg.tokens_per_frame))
    assert not res.replay[:, :, : cfg.tokens_per_frame].any()


def test_budget_beyond_first_frame_limit_is_rejected():
    model = tiny_model(frames=4)
    with pytest.raises(ValueError, match="outside"):
        decode(model, LABELS, policy=make_policy("random", target_replay_ratio=0.8))


def test_oracle_beats_random_on_mlp_error_at_equal_budget():
    model = tiny_model(frames=4)
    opts = DecodeOptions(measure_mlp_error=True)
    err = {}
    for name in ("random", "oracle"):
        res = decode(model, LABELS, policy=make_policy(name, target_replay_ratio=0.5), options=opts)
        err[name] = float(np.nanmean(res.mlp_rel_error[res.replay]))
    assert err["oracle"] < err["random"]


def test_threshold_for_ratio_counts_all_entries():
    tas = np.array([[np.nan, np.nan, 3.0, 1.0, 2.0, 0.0]])
    tau = threshold_for_ratio(tas, 0.5)
    assert tau == 1.0
    assert np.mean(np.nan_to_num(tas, nan=-np.inf) >= tau) == 0.5


def test_sparse_attention_keeps_sinks_and_window():
    assert attention_positions(5, 1, 10) is None
    assert attention_positions(9, 2, 3).tolist() == [0, 1, 7, 8, 9]
    model = tiny_model()
    samp = SamplingOptions(seed=1)
    full = decode(model, LABELS, policy=DensePolicy(), sampling=samp, keep_logits=True)
    sparse = decode(
        model,
        LABELS,
        policy=DensePolicy(),
        options=DecodeOptions(sparse_sink_tokens=1, sparse_window=3),
        sampling=samp,
        keep_logits=True,
    )
    assert torch.equal(full.logits[:, :4], sparse.logits[:, :4])  # within sink + window: identical
    assert not torch.allclose(full.logits[:, 5:], sparse.logits[:, 5:])


def test_decode_is_deterministic_for_a_seed():
    model = tiny_model()
    a = decode(
        model, LABELS, policy=make_policy("random", target_replay_ratio=0.4), sampling=SamplingOptions(seed=9)
    )
    b = decode(
        model, LABELS, policy=make_policy("random", target_replay_ratio=0.4), sampling=SamplingOptions(seed=9)
    )
    assert torch.equal(a.tokens, b.tokens) and np.array_equal(a.replay, b.replay)


def test_per_layer_thresholds():
    model = tiny_model()
    n = model.config.tokens_per_frame
    res = decode(model, LABELS, policy=TasPolicy([math.inf, -math.inf]))
    assert not res.replay[:, 0].any()
    assert res.replay[:, 1, n:].all()


def test_force_tokens_feeds_the_given_video():
    model = tiny_model()
    samp = SamplingOptions(seed=4)
    dense = decode(model, LABELS, policy=DensePolicy(), sampling=samp)
    again = decode(model, LABELS, policy=DensePolicy(), sampling=samp, force_tokens=dense.tokens)
    assert torch.equal(again.tokens, dense.tokens)  # fed its own video, dense reproduces itself
    other = torch.randint(
        0, model.config.codebook_size, dense.tokens.shape, generator=torch.Generator().manual_seed(0)
    )
    nocfg = SamplingOptions(cfg=False, seed=4)
    forced = decode(model, LABELS, policy=DensePolicy(), sampling=nocfg, force_tokens=other, keep_logits=True)
    full = model(model.input_ids(torch.tensor(LABELS), other))[:, :, : model.config.codebook_size]
    torch.testing.assert_close(forced.logits, full, rtol=1e-4, atol=1e-4)  # conditioned on the fed video
