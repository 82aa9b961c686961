"""Hardware/software co-check of the TAS unit: fixed-point replay decisions vs the PyTorch model's float ones.

Input is (q, k_aligned, tau): q of shape (entries, heads, d_head) and the aligned keys, already expanded to
one key per query head (GQA groups repeated, as the KV-cache reader streams them). The float decision is
the model's (``decide(TAS, tau)``); the fixed-point one is :func:`accelerator.rtl.tas_unit.tas_fixed`, the
bit-exact model of the RTL (which the harness checks against the MyHDL unit, and which
:func:`cocheck` re-checks on a sample of these very vectors).

Where q and k come from: :func:`capture_qk` hooks ``models.fastcar.temporal_attention_score`` during a
dense decode of the shipped trained checkpoint. Until that checkpoint exists it falls back to a
**stand-in**, the seeded untrained tiny model of ``models.testing``, and says so in ``source``.

Why decisions can disagree: q and k are rounded to ``frac_bits`` fractional bits (and saturated to
``width`` bits), the mean over heads is floored, and tau is rounded to the product format. The error of
the fixed-point TAS is bounded per entry by :func:`error_bound`; every disagreement should lie within that
bound of tau (``explained``), i.e. be a near-threshold case, not a design error.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from accelerator.rtl.tas_unit import (
    RECIP_BITS,
    TasBench,
    TasJob,
    TasParams,
    quantize,
    tas_from_register,
    tau_register,
)
from accelerator.tas_unit import decide


@dataclass
class QKSet:
    q: np.ndarray  #: (entries, heads, d_head) float
    k: np.ndarray  #: (entries, heads, d_head) float, aligned keys one per query head
    tas: np.ndarray  #: (entries,) the model's float TAS
    source: str
    stand_in: bool


@dataclass
class CoCheck:
    tau: float
    width: int
    frac_bits: int
    entries: int
    agree: int
    disagreements: list[dict] = field(default_factory=list)
    saturated: int = 0
    rtl_sample: int = 0
    rtl_equal: bool | None = None

    @property
    def agreement(self) -> float:
        return self.agree / max(1, self.entries)

    @property
    def explained(self) -> int:
        return sum(d["explained"] for d in self.disagreements)


def reciprocal_excess(heads: int) -> float:
    """How much the unit's 1/heads exceeds the true one, relative to 1: the mean is computed as
    (acc x R) >> RECIP_BITS with R = 2^RECIP_BITS // heads + 1, i.e. acc x (1/heads + excess / heads).
    Zero for a power of two, where the mean is a shift."""
    if heads & (heads - 1) == 0:
        return 0.0
    recip = (1 << RECIP_BITS) // heads + 1
    return (recip * heads - (1 << RECIP_BITS)) / (1 << RECIP_BITS)


def error_bound(q: np.ndarray, k: np.ndarray, width: int, frac_bits: int) -> np.ndarray:
    """Worst-case |fixed TAS - float TAS| per entry from rounding q and k, the reciprocal of the head
    count (when it is not a power of two), the floored mean and tau."""
    lsb = 2.0**-frac_bits
    heads, d = q.shape[-2], q.shape[-1]
    # |q.k - q'.k'| <= sum(|q| e + |k| e + e^2) with e = lsb / 2 per element
    elem = (np.abs(q) + np.abs(k)).sum(axis=(-1, -2)) * lsb / 2 + heads * d * (lsb / 2) ** 2
    # |acc| of the rounded integers is at most sum((|q| + e)(|k| + e)) in real units; the reciprocal
    # overshoots the mean by |acc| x excess / heads
    acc = ((np.abs(q) + lsb / 2) * (np.abs(k) + lsb / 2)).sum(axis=(-1, -2))
    recip_err = acc * reciprocal_excess(heads) / heads
    floor_err = 2.0 ** (-2 * frac_bits)  # mean floored, tau rounded: one product LSB each
    return (elem / heads + recip_err + 2 * floor_err) / math.sqrt(d)


def choose_frac_bits(q: np.ndarray, k: np.ndarray, width: int) -> int:
    """The most fractional bits that keep every captured q and k element within ``width`` bits."""
    peak = float(max(np.abs(q).max(), np.abs(k).max(), 1e-12))
    int_bits = max(0, math.ceil(math.log2(peak + 1e-12) + 1e-9))
    return max(0, width - 1 - int_bits)


def _fixed_point(qk: QKSet, width: int, frac_bits: int) -> dict:
    """What the co-check needs that does not depend on tau: the quantized vectors, the unit's mean
    registers, which entries saturated and each entry's error bound."""
    heads = qk.q.shape[1]
    qi, ki = quantize(qk.q, width, frac_bits), quantize(qk.k, width, frac_bits)
    lim = (1 << (width - 1)) - 1
    sat = (np.abs(qi) >= lim).any(axis=(1, 2)) | (np.abs(ki) >= lim).any(axis=(1, 2))
    means, _ = tas_fixed_batch(qi, ki, 0, False, heads)
    return {
        "qi": qi,
        "ki": ki,
        "sat": sat,
        "means": means,
        "bound": error_bound(qk.q, qk.k, width, frac_bits),
    }


def cocheck(
    qk: QKSet,
    tau: float,
    width: int = 16,
    frac_bits: int = 8,
    strict: bool = False,
    rtl_sample: int = 0,
    fixed_point: dict | None = None,
) -> CoCheck:
    """Agreement of fixed-point and float replay decisions at ``tau``; optionally run ``rtl_sample`` of
    the entries through the MyHDL TAS unit to confirm the fixed-point model is what the RTL computes."""
    heads, d = qk.q.shape[1], qk.q.shape[2]
    fp = fixed_point or _fixed_point(qk, width, frac_bits)
    qi, ki, sat, means, bound = fp["qi"], fp["ki"], fp["sat"], fp["means"], fp["bound"]
    treg = tau_register(tau, d, frac_bits, strict)
    out = CoCheck(tau, width, frac_bits, len(qk.tas), 0, saturated=int(sat.sum()))
    reps = np.asarray(means > treg if strict else means >= treg, dtype=bool)
    tas = np.asarray(qk.tas, dtype=np.float64)
    ref = np.asarray(decide(tas, tau, strict), dtype=bool)
    out.agree = int(np.sum(reps == ref))
    for e in np.flatnonzero(reps != ref):
        margin = float(tas[e]) - tau
        within = abs(margin) <= bound[e]
        out.disagreements.append(
            {
                "entry": int(e),
                "tas_float": float(tas[e]),
                "tas_fixed": tas_from_register(int(means[e]), d, frac_bits),
                "margin": margin,
                "bound": float(bound[e]),
                "cause": "rounding" if within else ("saturation" if sat[e] else "unexplained"),
                "explained": bool(within or sat[e]),
            }
        )
    fixed = list(zip(means.tolist(), reps.tolist(), strict=True))
    if rtl_sample:
        from accelerator.rtl.harness import simulate

        idx = np.linspace(0, len(qk.tas) - 1, min(rtl_sample, len(qk.tas))).astype(int)
        p = TasParams(heads=heads, head_dim=d, lanes=min(8, d), width=width, frac_bits=frac_bits)
        jobs = [TasJob(qi[e], ki[e], treg, strict) for e in idx]
        res = simulate(TasBench(p, jobs))
        out.rtl_sample = len(idx)
        out.rtl_equal = res.outputs == [fixed[e] for e in idx]
    return out


@contextmanager
def _record_tas_inputs(store: list):
    import models.fastcar as fc

    orig = fc.temporal_attention_score

    def hook(q, k_prev, scale):
        tas = orig(q, k_prev, scale)
        store.append(
            (
                q.detach().float().cpu().numpy(),
                k_prev.detach().float().cpu().numpy(),
                tas.float().cpu().numpy(),
            )
        )
        return tas

    fc.temporal_attention_score = hook
    try:
        yield
    finally:
        fc.temporal_attention_score = orig


def tas_fixed_batch(
    q: np.ndarray, k: np.ndarray, tau_reg: int, strict: bool, heads: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~accelerator.rtl.tas_unit.tas_fixed` over (entries, heads, d) integer arrays at once."""
    acc = np.einsum("ehd,ehd->e", q.astype(np.int64), k.astype(np.int64))
    if heads & (heads - 1) == 0:
        mean = acc >> (heads.bit_length() - 1)
    else:  # the reciprocal product can exceed 64 bits: exact Python integers
        recip = (1 << RECIP_BITS) // heads + 1
        mean = np.array([(int(a) * recip) >> RECIP_BITS for a in acc], dtype=object)
    rep = mean > tau_reg if strict else mean >= tau_reg
    return mean, np.asarray(rep, dtype=bool)


def capture_qk(
    checkpoint: str | None = None, prompts: int = 4, seed: int = 0, allow_stand_in: bool = True
) -> QKSet:
    """q and aligned k of every (row, layer, step) TAS decision of a dense decode.

    Uses the shipped trained checkpoint (``models.checkpoint.load_checkpoint``); without one, and if
    ``allow_stand_in``, the untrained seeded tiny model of ``models.testing`` (labelled as a stand-in).
    """
    import torch

    from models.checkpoint import load_checkpoint
    from models.fastcar import SamplingOptions, decode
    from models.policies import DensePolicy

    try:
        model, _, _ = load_checkpoint(checkpoint)
        source, stand_in = f"captured from checkpoint {checkpoint or 'shipped default'}", False
    except (FileNotFoundError, ValueError) as exc:
        if not allow_stand_in:
            raise
        from models.testing import tiny_model

        model = tiny_model(seed, frames=4, tokens_per_frame=16)
        source = f"STAND-IN: untrained seeded tiny model (models.testing.tiny_model); trained checkpoint pending ({exc})"
        stand_in = True
    torch.manual_seed(seed)
    labels = [i % max(1, model.config.num_classes) for i in range(prompts)]
    store: list = []
    threads = torch.get_num_threads()
    # one thread: a small model decodes in well under a second, while several threads competing with
    # other jobs on a shared machine spin for minutes
    torch.set_num_threads(1)
    try:
        with _record_tas_inputs(store):
            decode(model, labels, policy=DensePolicy(), sampling=SamplingOptions(seed=seed))
    finally:
        torch.set_num_threads(threads)
    q = np.concatenate([s[0] for s in store])
    kv = np.concatenate([s[1] for s in store])
    tas = np.concatenate([s[2] for s in store])
    group = q.shape[1] // kv.shape[1]
    k = np.repeat(kv, group, axis=1)
    return QKSet(q.astype(np.float64), k.astype(np.float64), tas.astype(np.float64), source, stand_in)


def tau_between(tas: np.ndarray, quantile: float) -> float:
    """A tau near the ``quantile`` of the captured TAS, placed midway between two distinct captured values.

    A tau equal to a captured TAS (as a raw quantile often is) makes that decision a tie that any finite
    precision resolves arbitrarily; a user's tau is not chosen that way.
    """
    u = np.unique(tas[np.isfinite(tas)])
    i = int(np.clip(np.searchsorted(u, np.quantile(u, quantile)), 1, len(u) - 1))
    return float((u[i - 1] + u[i]) / 2)


@dataclass
class Sweep:
    """Co-checks over many taus: the distribution of the agreement, not its best point."""

    checks: list[CoCheck]

    @property
    def agreements(self) -> np.ndarray:
        return np.array([c.agreement for c in self.checks])

    @property
    def worst(self) -> CoCheck:
        return min(self.checks, key=lambda c: c.agreement)

    def causes(self) -> dict[str, int]:
        out = {"rounding": 0, "saturation": 0, "unexplained": 0}
        for c in self.checks:
            for d in c.disagreements:
                out[d["cause"]] += 1
        return out

    def summary(self) -> str:
        a = 100 * self.agreements
        return (
            f"agreement over {len(a)} taus: worst {a.min():.3f}% (tau {self.worst.tau:+.4f}), "
            f"5th percentile {np.percentile(a, 5):.3f}%, median {np.median(a):.3f}%, mean {a.mean():.3f}%"
        )


def sweep(
    qk: QKSet,
    n: int = 199,
    width: int = 16,
    frac_bits: int | None = None,
    lo: float = 0.005,
    hi: float = 0.995,
) -> Sweep:
    """Co-checks at ``n`` taus spread over the captured TAS range (between the ``lo`` and ``hi`` quantiles,
    each midway between two captured values; replay ratios from about 99.5% to 0.5%)."""
    fb = choose_frac_bits(qk.q, qk.k, width) if frac_bits is None else frac_bits
    taus = sorted({tau_between(qk.tas, x) for x in np.linspace(lo, hi, n)})
    fp = _fixed_point(qk, width, fb)
    return Sweep([cocheck(qk, t, width, fb, fixed_point=fp) for t in taus])


def report(
    qk: QKSet, taus: list[float] | None = None, width: int = 16, frac_bits: int | None = None
) -> list[CoCheck]:
    """Co-checks at the given taus (default: near the 25/50/75% quantiles of the captured TAS, i.e.
    replay ratios of about 75/50/25%), at ``frac_bits`` (default: calibrated from the captured range)."""
    fb = choose_frac_bits(qk.q, qk.k, width) if frac_bits is None else frac_bits
    taus = taus if taus is not None else [tau_between(qk.tas, x) for x in (0.25, 0.5, 0.75)]
    return [cocheck(qk, t, width, fb) for t in taus]
