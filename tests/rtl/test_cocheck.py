"""Hardware/software co-check machinery of the fixed-point TAS unit."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerator.rtl.cocheck import QKSet, capture_qk, cocheck, error_bound, report, tau_between
from accelerator.rtl.tas_unit import tau_register
from accelerator.tas_unit import decide, temporal_attention_score


def _synthetic(n: int, heads: int, d: int, seed: int) -> QKSet:
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 1, size=(n, heads, d))
    k = 0.6 * q + 0.8 * rng.normal(0, 1, size=(n, heads, d))
    tas = np.array([temporal_attention_score(q[e], k[e]) for e in range(n)])
    return QKSet(q, k, tas, "synthetic (test)", True)


@settings(max_examples=200, deadline=None)
@given(
    mean=st.integers(-(2**20), 2**20),
    tau=st.floats(-50, 50, allow_nan=False),
    d=st.integers(1, 256),
    frac=st.integers(0, 12),
    strict=st.booleans(),
)
def test_tau_register_makes_the_integer_compare_exact(
    mean: int, tau: float, d: int, frac: int, strict: bool
) -> None:
    """Comparing the integer mean with the tau register == comparing the real value it stands for."""
    real = mean / (1 << (2 * frac)) / math.sqrt(d)
    reg = tau_register(tau, d, frac, strict)
    hw = mean > reg if strict else mean >= reg
    x = tau * math.sqrt(d) * (1 << (2 * frac))
    if abs(mean - x) > 1e-6 * max(1.0, abs(x)):  # away from float round-off of the product itself
        assert hw == decide(real, tau, strict)


def test_agreement_and_disagreements_explained() -> None:
    qk = _synthetic(2000, 4, 16, 0)
    res = report(qk, width=16)
    for r in res:
        assert r.agreement >= 0.995
        assert r.explained == len(r.disagreements)
    coarse = cocheck(qk, tau_between(qk.tas, 0.5), width=6, frac_bits=2)
    assert coarse.agreement < 0.99  # a coarse format does disagree, and only near the threshold
    assert coarse.explained == len(coarse.disagreements)


def test_error_bound_holds() -> None:
    from accelerator.rtl.tas_unit import quantize, tas_fixed, tas_from_register

    qk = _synthetic(300, 3, 10, 1)
    bound = error_bound(qk.q, qk.k, 12, 6)
    for e in range(300):
        mean, _ = tas_fixed(quantize(qk.q[e], 12, 6), quantize(qk.k[e], 12, 6), 0, False, 3)
        assert abs(tas_from_register(mean, 10, 6) - qk.tas[e]) <= bound[e] + 1e-12


def test_rtl_runs_captured_vectors() -> None:
    """The MyHDL unit computes the fixed-point model's results on co-check vectors too."""
    qk = _synthetic(40, 2, 8, 2)
    r = cocheck(qk, tau_between(qk.tas, 0.5), width=16, frac_bits=10, rtl_sample=6)
    assert r.rtl_sample == 6 and r.rtl_equal


def test_capture_from_model_labels_its_source() -> None:
    """q/k captured from a decode of the model (stand-in until a trained checkpoint ships), float TAS
    reproduced from the captured vectors."""
    qk = capture_qk(prompts=1)
    assert qk.q.shape == qk.k.shape and len(qk.tas) == qk.q.shape[0] > 0
    assert ("STAND-IN" in qk.source) == qk.stand_in
    e = len(qk.tas) // 2
    assert (
        temporal_attention_score(qk.q[e], qk.k[e]) == np.float64(qk.tas[e]).item()
        or abs(temporal_attention_score(qk.q[e], qk.k[e]) - qk.tas[e]) < 1e-5
    )
    assert min(r.agreement for r in report(qk)) >= 0.995


def test_batch_model_equals_the_bit_exact_model() -> None:
    from accelerator.rtl.cocheck import tas_fixed_batch
    from accelerator.rtl.tas_unit import tas_fixed

    rng = np.random.default_rng(4)
    for heads in (4, 3):
        q = rng.integers(-32768, 32768, size=(50, heads, 16))
        k = rng.integers(-32768, 32768, size=(50, heads, 16))
        for strict in (False, True):
            means, reps = tas_fixed_batch(q, k, 1000, strict, heads)
            assert [(int(m), bool(r)) for m, r in zip(means, reps, strict=True)] == [
                tas_fixed(q[e], k[e], 1000, strict, heads) for e in range(50)
            ]


def test_saturation_is_named_as_the_cause() -> None:
    """Values far beyond the format saturate; such disagreements are attributed to saturation."""
    qk = _synthetic(400, 2, 8, 3)
    qk = QKSet(qk.q * 40, qk.k * 40, qk.tas * 1600, qk.source, True)
    r = cocheck(qk, tau_between(qk.tas, 0.5), width=8, frac_bits=4)
    assert r.saturated > 0
    causes = {d["cause"] for d in r.disagreements}
    assert "saturation" in causes and "unexplained" not in causes


def test_error_bound_budgets_the_reciprocal_of_a_head_count_not_a_power_of_two() -> None:
    """Three heads: the unit multiplies by R = 2^24 // 3 + 1 instead of dividing, which overshoots the
    mean by |acc| x (3R - 2^24) / 2^24 / 3. In a fine format (32 bits, 24 fractional) the rounding of q
    and k is small next to it, so with aligned q and k near 8 the bound holds only with that term."""
    from accelerator.rtl.cocheck import reciprocal_excess
    from accelerator.rtl.tas_unit import RECIP_BITS, quantize, tas_fixed, tas_from_register

    recip = (1 << RECIP_BITS) // 3 + 1
    assert reciprocal_excess(3) == (3 * recip - (1 << RECIP_BITS)) / (1 << RECIP_BITS)  # 2^-24
    assert reciprocal_excess(4) == 0.0
    rng = np.random.default_rng(5)
    heads, d, width, frac = 3, 128, 32, 24
    q = rng.uniform(-7.9, 7.9, (200, heads, d))
    k = q * 0.95
    tas = np.array([np.mean(np.sum(q[e] * k[e], axis=-1)) / np.sqrt(d) for e in range(200)])
    bound = error_bound(q, k, width, frac)
    errors = []
    for e in range(200):
        mean, _ = tas_fixed(quantize(q[e], width, frac), quantize(k[e], width, frac), 0, False, heads)
        errors.append(abs(tas_from_register(mean, d, frac) - tas[e]))
    errors = np.array(errors)
    assert np.all(errors <= bound + 1e-12)
    acc = ((np.abs(q) + 2.0**-frac / 2) * (np.abs(k) + 2.0**-frac / 2)).sum(axis=(-1, -2))
    without_reciprocal = bound - acc * reciprocal_excess(heads) / heads / np.sqrt(d)
    assert np.any(errors > without_reciprocal)


def test_sweep_reports_the_distribution_over_many_taus() -> None:
    from accelerator.rtl.cocheck import sweep

    qk = _synthetic(2000, 4, 16, 3)
    s = sweep(qk, n=150, width=12, frac_bits=6)
    assert len(s.checks) >= 100  # distinct taus between captured values across the range
    taus = [c.tau for c in s.checks]
    assert min(taus) < np.quantile(qk.tas, 0.05) and max(taus) > np.quantile(qk.tas, 0.95)
    assert s.causes()["unexplained"] == 0
    assert s.worst.agreement == s.agreements.min() < 1.0  # 12-bit rounding does disagree somewhere
    assert "worst" in s.summary() and "median" in s.summary()
