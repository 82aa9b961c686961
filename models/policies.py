"""Replay policies behind one interface: which (sequence, layer, token) reuse last frame's MLP output.

The decode engine (:mod:`models.fastcar`) asks a policy once per layer and decode step for the whole batch,
passing a :class:`DecisionContext`. The engine owns the rules every policy shares (first frame never
replays, staleness cap, "not twice in a row", CFG coherence) through ``ctx.eligible``; a policy only says
what it *wants*. Budgeted policies (``target_replay_ratio``) turn the overall ratio -- counted over all
layers x steps x batch like the reference code, first frame included -- into a per-frame quota and meet
it online with :class:`OnlineBudget`, since decisions are made token by token and future scores are not
known yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cosim.traces import (  # noqa: F401  (re-exported: one way to count the ratio and the budget)
    eligible_fraction,
    staggered_interval_schedule,
    threshold_for_ratio,
)


@dataclass
class DecisionContext:
    layer: int
    step: int
    frame: int
    token: int
    tas: torch.Tensor  # (B,) TAS of this step (NaN in frame 0)
    eligible: torch.Tensor  # (B,) bool: replay allowed by the shared rules
    mlp_in: torch.Tensor  # (B, d) this step's MLP input (post-attention RMSNorm output)
    prev_in: torch.Tensor  # (B, d) MLP input at the same position one frame earlier
    true_error: torch.Tensor | None = None  # (B,) rel. error replay would cause (oracle only)


class ReplayPolicy:
    """Base class. ``wants_replay`` returns (B,) bool; ``commit`` sees the final decision."""

    name = "base"
    needs_true_error = False  # the engine computes the true MLP output for every row (oracle)
    needs_prev_input = False  # the engine keeps each position's MLP input of the previous frame
    threshold: float | None = None

    def reset(self, batch: int, layers: int, frames: int, tokens_per_frame: int, seed: int) -> None:
        self.batch, self.layers, self.frames, self.n = batch, layers, frames, tokens_per_frame

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        raise NotImplementedError

    def commit(self, ctx: DecisionContext, replay: torch.Tensor) -> None:
        pass


def frame_quotas(target_ratio: float, frames: int, n: int) -> np.ndarray:
    """Replays per (sequence, layer, frame); Bresenham over frames so the total is round(q*n*(T-1))."""
    q = eligible_fraction(target_ratio, frames)
    cum = np.round(q * n * np.arange(frames)).astype(int)
    quotas = np.zeros(frames, int)
    quotas[1:] = np.diff(cum)
    return quotas


class OnlineBudget:
    """Per-frame top-k by a score, decided online with an exact count.

    Replays a token when its score ranks in the top ``need/remaining`` fraction of the last N scores
    seen at this (sequence, layer); forces replay when the remaining tokens equal the remaining quota, and
    stops once the quota is used. So every (sequence, layer, frame) replays exactly its quota (unless the
    shared rules make a token ineligible), approximating the top-k that an offline choice would make.
    """

    def __init__(self, target_ratio: float, batch: int, layers: int, frames: int, n: int) -> None:
        self.quota = torch.as_tensor(frame_quotas(target_ratio, frames, n))
        self.n = n
        self.used = torch.zeros(layers, batch, dtype=torch.long)
        self.hist = torch.full((layers, batch, n), float("nan"))
        self.frame = -1

    def wants(self, ctx: DecisionContext, score: torch.Tensor) -> torch.Tensor:
        if ctx.frame == 0:
            return torch.zeros_like(ctx.eligible)
        if ctx.token == 0 and ctx.layer == 0:
            self.used.zero_()
        need = self.quota[ctx.frame] - self.used[ctx.layer]
        remaining = self.n - ctx.token
        hist = self.hist[ctx.layer]
        valid = ~torch.isnan(hist)
        count = valid.sum(1)
        above = ((hist > score[:, None]) & valid).sum(1).float()
        frac_above = torch.where(count > 0, above / count.clamp(min=1), torch.full_like(above, 0.5))
        want = frac_above < need.float() / remaining
        want = want | (need >= remaining)
        want = want & (need > 0)
        self.hist[ctx.layer, :, ctx.token] = score
        return want

    def commit(self, ctx: DecisionContext, replay: torch.Tensor) -> None:
        if ctx.frame > 0:
            self.used[ctx.layer] += replay.long()


class DensePolicy(ReplayPolicy):
    name = "dense"

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        return torch.zeros_like(ctx.eligible)


class TasPolicy(ReplayPolicy):
    """FastCar: replay when TAS >= tau (paper) or TAS > tau (reference code); tau may be per layer."""

    name = "tas"

    def __init__(self, threshold: float | Sequence[float], strict: bool = False) -> None:
        self.taus = [float(t) for t in threshold] if isinstance(threshold, Sequence) else None
        self.threshold = None if self.taus else float(threshold)
        self.strict = strict

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        tau = self.taus[ctx.layer] if self.taus else self.threshold
        tas = torch.nan_to_num(ctx.tas, nan=-math.inf)
        return tas > tau if self.strict else tas >= tau


class FixedIntervalPolicy(ReplayPolicy):
    """DeepCache/FORA-style: content-blind periodic refresh.

    With an ``interval`` k, frames f with f % k == 0 compute and the others replay. With a target ratio,
    each (layer, token) position gets a Bresenham schedule with its own phase, so the refreshes are
    staggered and the total meets the budget.
    """

    name = "fixed_interval"

    def __init__(self, interval: int | None = None, target_ratio: float | None = None) -> None:
        if (interval is None) == (target_ratio is None):
            raise ValueError(
                "fixed_interval needs exactly one of interval (threshold) or target_replay_ratio"
            )
        if interval is not None and interval < 1:
            raise ValueError("fixed_interval interval must be >= 1")
        self.interval, self.target = interval, target_ratio
        self.threshold = None if interval is None else float(interval)

    def reset(self, batch: int, layers: int, frames: int, tokens_per_frame: int, seed: int) -> None:
        super().reset(batch, layers, frames, tokens_per_frame, seed)
        if self.target is not None:
            rep = staggered_interval_schedule(self.target, frames, layers, tokens_per_frame)
            self.schedule = torch.as_tensor(rep)

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        if self.target is not None:
            val = bool(self.schedule[ctx.frame, ctx.layer, ctx.token])
        else:
            val = ctx.frame % self.interval != 0
        return torch.full_like(ctx.eligible, val)


class RandomPolicy(ReplayPolicy):
    """Replay at random at the same budget: the floor any score must beat."""

    name = "random"

    def __init__(self, target_ratio: float) -> None:
        self.target = target_ratio

    def reset(self, batch: int, layers: int, frames: int, tokens_per_frame: int, seed: int) -> None:
        super().reset(batch, layers, frames, tokens_per_frame, seed)
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.budget = OnlineBudget(self.target, batch, layers, frames, tokens_per_frame)

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        return self.budget.wants(ctx, torch.rand(ctx.eligible.shape[0], generator=self.gen))

    def commit(self, ctx: DecisionContext, replay: torch.Tensor) -> None:
        self.budget.commit(ctx, replay)


class TopKPolicy(ReplayPolicy):
    """Per-frame top-k by TAS (ToCa-style budget): the TAS ranking at an exact budget."""

    name = "topk"

    def __init__(self, target_ratio: float) -> None:
        self.target = target_ratio

    def reset(self, batch: int, layers: int, frames: int, tokens_per_frame: int, seed: int) -> None:
        super().reset(batch, layers, frames, tokens_per_frame, seed)
        self.budget = OnlineBudget(self.target, batch, layers, frames, tokens_per_frame)

    def score(self, ctx: DecisionContext) -> torch.Tensor:
        return torch.nan_to_num(ctx.tas, nan=-math.inf)

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        return self.budget.wants(ctx, self.score(ctx))

    def commit(self, ctx: DecisionContext, replay: torch.Tensor) -> None:
        self.budget.commit(ctx, replay)


class OraclePolicy(TopKPolicy):
    """Replay where the true relative MLP-output error is lowest, at the same budget (needs the MLP)."""

    name = "oracle"
    needs_true_error = True

    def score(self, ctx: DecisionContext) -> torch.Tensor:
        if ctx.true_error is None:  # frame 0: nothing to replay from
            return torch.full_like(ctx.tas, -math.inf)
        return -torch.nan_to_num(ctx.true_error, nan=math.inf)


class InputSimilarityPolicy(ReplayPolicy):
    """TeaCache-style: accumulate the relative L1 change of the MLP input since the last compute.

    With a threshold delta: replay while the accumulated change stays below delta, compute (and reset)
    otherwise. With a target ratio: rank by the accumulated change with :class:`OnlineBudget`.
    """

    name = "input_similarity"
    needs_prev_input = True

    def __init__(self, threshold: float | None = None, target_ratio: float | None = None) -> None:
        if threshold is None and target_ratio is None:
            raise ValueError("input_similarity needs a threshold or a target_replay_ratio")
        self.threshold, self.target = threshold, target_ratio

    def reset(self, batch: int, layers: int, frames: int, tokens_per_frame: int, seed: int) -> None:
        super().reset(batch, layers, frames, tokens_per_frame, seed)
        self.acc = torch.zeros(layers, batch, tokens_per_frame)
        self.budget = (
            OnlineBudget(self.target, batch, layers, frames, tokens_per_frame)
            if self.threshold is None
            else None
        )

    def _candidate(self, ctx: DecisionContext) -> torch.Tensor:
        rel = (ctx.mlp_in - ctx.prev_in).abs().sum(-1) / ctx.prev_in.abs().sum(-1).clamp(min=1e-12)
        return self.acc[ctx.layer, :, ctx.token] + rel

    def wants_replay(self, ctx: DecisionContext) -> torch.Tensor:
        if ctx.frame == 0:
            return torch.zeros_like(ctx.eligible)
        self._cand = self._candidate(ctx)
        if self.budget is not None:
            return self.budget.wants(ctx, -self._cand)
        return self._cand < self.threshold

    def commit(self, ctx: DecisionContext, replay: torch.Tensor) -> None:
        if ctx.frame == 0:
            return
        if self.budget is not None:
            self.budget.commit(ctx, replay)
        self.acc[ctx.layer, :, ctx.token] = torch.where(replay, self._cand, torch.zeros_like(self._cand))


def make_policy(
    name: str,
    threshold: float | Sequence[float] | None = None,
    target_replay_ratio: float | None = None,
    strict: bool = False,
) -> ReplayPolicy:
    """Build a policy by name. ``tas`` needs a threshold here (capture calibrates one from a target)."""
    if name == "dense":
        return DensePolicy()
    if name == "tas":
        if threshold is None:
            raise ValueError("policy 'tas' needs a threshold (or let capture calibrate it from a target)")
        return TasPolicy(threshold, strict=strict)
    if name == "fixed_interval":
        interval = None if threshold is None or target_replay_ratio is not None else int(threshold)
        return FixedIntervalPolicy(interval, target_replay_ratio if interval is None else None)
    if name == "input_similarity":
        if target_replay_ratio is not None:
            return InputSimilarityPolicy(target_ratio=target_replay_ratio)
        return InputSimilarityPolicy(threshold=None if threshold is None else float(threshold))
    budgeted = {"random": RandomPolicy, "topk": TopKPolicy, "oracle": OraclePolicy}
    if name in budgeted:
        if target_replay_ratio is None:
            raise ValueError(f"policy {name!r} needs target_replay_ratio")
        return budgeted[name](target_replay_ratio)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


POLICY_NAMES = ("dense", "tas", "fixed_interval", "random", "input_similarity", "topk", "oracle")
