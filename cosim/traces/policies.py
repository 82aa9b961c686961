"""Replay decisions from TAS values: choosing tau for a budget and the trace-level policies.

These act on a (batch, layers, steps) TAS cube, so they serve synthetic, transferred and captured traces
alike. The replay ratio is counted as the reference code counts it: replayed MLPs over
layers x decode steps x batch, first frame included in the denominator.
"""

from __future__ import annotations

import numpy as np

from cosim.config import PolicySection


def eligible_fraction(target_ratio: float, frames: int) -> float:
    """Overall ratio (all frames) -> fraction of the eligible frames (1..T-1) to replay."""
    if frames < 2:
        raise ValueError("a replay budget needs at least 2 frames")
    cap = (frames - 1) / frames
    if not 0.0 <= target_ratio <= cap + 1e-9:
        raise ValueError(
            f"target_replay_ratio {target_ratio} is outside [0, (T-1)/T = {cap:.4f}] for T={frames}"
        )
    return min(1.0, target_ratio * frames / (frames - 1))


def staggered_interval_schedule(target_ratio: float, frames: int, layers: int, tokens_per_frame: int):
    """fixed_interval at a budget: each (layer, token) position replays on a Bresenham schedule with its
    own phase (golden-ratio spaced), so refreshes are staggered and the total meets the budget.
    (frames, layers, tokens_per_frame) bool, frame 0 never replays."""
    q = eligible_fraction(target_ratio, frames)
    golden = (np.sqrt(5) - 1) / 2
    idx = np.arange(layers)[:, None] * tokens_per_frame + np.arange(tokens_per_frame)[None]
    phase = (idx * golden) % 1.0  # (L, N)
    f = np.arange(frames)[:, None, None]
    rep = np.floor(f * q + phase) - np.floor((f - 1) * q + phase) >= 1  # (T, L, N)
    rep[0] = False
    return rep


def threshold_for_ratio(tas: np.ndarray, target_ratio: float) -> float:
    """The tau at which ``tas >= tau`` replays ``target_ratio`` of all entries (NaN = cannot replay).

    Ties at tau can push the realised ratio slightly above the target; on continuous TAS they do not.
    """
    flat = np.asarray(tas, dtype=np.float64).ravel()
    eligible = np.sort(flat[~np.isnan(flat)])[::-1]
    k = int(round(target_ratio * flat.size))
    if k > eligible.size:
        raise ValueError(
            f"target replay ratio {target_ratio} needs {k} replays but only {eligible.size} of "
            f"{flat.size} decisions can replay"
        )
    if k == 0:  # a tau above every score, finite so that traces and summaries can store it; float32
        # steps, as TAS columns and tensors are float32 (torch compares a float32 tensor in float32)
        top = np.float32(eligible[0]) if eligible.size else np.float32(0.0)
        return float(np.nextafter(top, np.float32(np.inf)))
    return float(eligible[k - 1])


def cap_staleness(replay: np.ndarray, tokens_per_frame: int, cap: int | None) -> np.ndarray:
    """At most ``cap`` consecutive frames replay at one (sequence, layer, position)."""
    if cap is None:
        return replay
    b, layers, steps = replay.shape
    frames = steps // tokens_per_frame
    grid = replay.reshape(b, layers, frames, tokens_per_frame).copy()
    run = np.zeros((b, layers, tokens_per_frame), dtype=np.int64)
    for t in range(frames):
        run = np.where(grid[:, :, t], run + 1, 0)
        over = run > cap
        grid[:, :, t] &= ~over
        run[over] = 0
    return grid.reshape(b, layers, steps)


def apply_policy(
    tas: np.ndarray,
    policy: PolicySection,
    tokens_per_frame: int,
    seed: int,
    cfg: bool,
) -> tuple[np.ndarray, float | list[float] | None]:
    """Replay cube and the tau used (None for policies without one) for a trace-level policy.

    With ``cfg``, ``tas`` is in the halves layout (:data:`cosim.traces.schema.CFG_LAYOUT`: row p + P is the
    CFG copy of row p, P = batch / 2); ``cfg_coherent`` decides each such pair on the mean of its TAS."""
    b, layers, steps = tas.shape
    first = np.zeros(steps, dtype=bool)
    first[:tokens_per_frame] = True
    eligible = ~np.isnan(tas) & ~first
    score = np.where(eligible, tas, np.nan)
    if policy.cfg_coherent and cfg:  # the halves layout: row p + P is the CFG copy of row p
        half = b // 2
        pair = np.stack([score[:half], score[half:]], axis=1).mean(axis=1)
        score = np.concatenate([pair, pair], axis=0)
    tau: float | list[float] | None = None
    target = policy.target_replay_ratio
    kind = policy.kind
    if kind == "dense":
        replay = np.zeros_like(eligible)
    elif kind == "tas":
        tau = policy.threshold if target is None else threshold_for_ratio(score, target)
        if tau is None:
            raise ValueError("policy: kind tas needs threshold or target_replay_ratio")
        per_layer = np.asarray(tau, dtype=np.float64).reshape(-1, 1)  # one tau, or one per layer
        replay = (score > per_layer) if policy.strict else (score >= per_layer)
    elif kind == "topk":
        ratio = _budget(policy)
        replay = _per_frame_topk(score, tokens_per_frame, ratio * steps / (steps - tokens_per_frame))
    elif kind == "random":
        ratio = _budget(policy)
        rng = np.random.default_rng(seed)
        u = np.where(eligible, rng.random(tas.shape), np.nan)
        replay = u >= threshold_for_ratio(u, ratio)
    elif kind == "fixed_interval" and target is not None:  # the capture policy's budgeted schedule
        frames = steps // tokens_per_frame
        rep = staggered_interval_schedule(target, frames, layers, tokens_per_frame)  # (T, L, N)
        replay = np.broadcast_to(rep.transpose(1, 0, 2).reshape(layers, steps), tas.shape).copy()
    elif kind == "fixed_interval":
        frame = np.arange(steps) // tokens_per_frame
        replay = np.broadcast_to((frame % policy.interval) != 0, tas.shape).copy()
    else:
        raise ValueError(f"policy.kind: {kind} runs only inside a live capture")
    replay &= eligible
    cap = 1 if policy.no_twice_in_row else policy.staleness_cap
    return cap_staleness(replay, tokens_per_frame, cap), tau


def _budget(policy: PolicySection) -> float:
    if policy.target_replay_ratio is None:
        raise ValueError(f"policy: kind {policy.kind} needs target_replay_ratio (its budget)")
    return policy.target_replay_ratio


def _per_frame_topk(score: np.ndarray, tokens_per_frame: int, share: float) -> np.ndarray:
    """In every later frame, replay the ``share`` of positions with the highest TAS."""
    b, layers, steps = score.shape
    frames = steps // tokens_per_frame
    grid = score.reshape(b, layers, frames, tokens_per_frame)
    k = int(round(min(share, 1.0) * tokens_per_frame))
    order = np.argsort(np.nan_to_num(-grid, nan=np.inf), axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(tokens_per_frame), axis=-1)
    return ((rank < k) & ~np.isnan(grid)).reshape(b, layers, steps)
