"""Trace transfer: resample a captured trace onto larger model/video dims, keeping its measured statistics.

Why: the paper's workloads (VILA-U 7B: 32 layers, 8 x 256 tokens, B = 10) cannot be captured on this CPU,
but a trace captured from a real trained model carries the statistics that matter to the hardware: how
replay varies with layer depth, where in the frame it happens (moving objects vs static background), how
it evolves over frames, and that the two CFG copies of a prompt decide differently.

A pure index mapping (every target entry a copy of one source entry) manufactures structure the source does
not have: 32 target layers copying 6 source layers in runs of 5-6 agree on 92.6% of their decisions where
consecutive source layers agree on about half; every 2 x 2 block of target tokens is one source cell. So
the transfer resamples instead (also in docs/capture.md, "Transfer to big presets"):

1. **Normal scores.** Within each source layer, the eligible TAS values (frames 1..) are rank-transformed
   to normal scores ``z`` (the marginal of each layer is set aside, to be restored in step 5).
2. **Measured correlations.** On ``z`` the source gives the correlation of neighbours along each axis:
   one per pair of consecutive layers (the depth axis is not stationary), and per source layer between
   consecutive eligible frames at one token, between vertically and between horizontally adjacent grid
   cells, and between the conditional and unconditional copy of a prompt. Each is measured as the
   correlation of the Gaussian copula with the same median-split agreement (Blomqvist's beta
   ``b = 2 P(both on the same side of their medians) - 1``, as ``sin(pi b / 2)``): decisions are
   thresholds, and the source's dependence is not Gaussian (layer 0 of the shipped model holds long runs
   of tied TAS), so a Pearson correlation of ``z`` would understate how often neighbours decide alike.
   Values are per source spacing, clipped to [0.001, 0.999] (the model has no negative correlation); an
   axis with a single source point (one layer, one eligible frame, a one-row grid) has none to measure,
   and 0.5 per whole axis is assumed.
3. **Conditional mean.** Every axis is put in relative coordinates (depth ``(l + 0.5) / L``, grid cell
   centres in fractions of the frame, eligible frames ``(f - 0.5) / (T - 1)``), and along each the
   correlation is modelled as exponential in distance, matching the measured value at one source spacing
   (``rho ** (distance / spacing)``). A target point gets the simple-kriging weights of its two bracketing
   source points under that model (linear interpolation when rho -> 1; beyond the outermost source point,
   ``rho ** distance`` times it, fading to the mean). Each source layer is kriged onto the target frames
   and grid with its own correlations (bilinear on the grid, between two frames in time), then the
   target layer between the two nearest source layers; the explained variance ``V`` is the product of the
   axes' (the frame and grid part interpolated over depth).
4. **Innovation.** The conditional mean has less than unit variance ``V``; seeded Gaussian noise of
   variance ``1 - V`` restores it. The noise is itself correlated along every target axis as the model
   says for one target spacing (an AR(1) recursion per axis, ``rho ** (target spacing / source spacing)``
   per step; on frames and grid per target layer, log-linear over depth between the source layers'
   values), and the unconditional copy's noise is correlated with its conditional row's by the measured
   CFG correlation at that depth. So two target layers (tokens, frames) as far apart as two neighbouring
   source layers (cells, frames) are about as correlated as those are, closer ones more, and no target
   entry is a copy.
5. **Marginals back.** Within each target layer the resampled scores are ranked and mapped through the
   quantile function of the source TAS at that depth: the linear interpolation, between the two nearest
   source layers, of their quantile functions (beyond the first/last source layer, that layer's). A target
   layer at a source layer's depth has exactly its TAS distribution, so the depth profile of replay is kept.

Kept as before: frame 0 is NaN and never replays; CFG pairs stay pairs (rows ``[0, P)`` conditional,
``[P, 2P)`` unconditional; target pair ``p'`` resamples one source pair, chosen round-robin over a seeded
permutation, and pairs reused beyond the first round see a seeded mirror of the token grid); the result
is deterministic in ``seed``.

Decisions: the stored ``replay`` column is re-made from the new TAS by the source's own rule when it is
a TAS threshold (``policy: tas`` with one tau, or one per source layer, interpolated over depth as the
quantile functions are; its ``strict``, ``cfg_coherent``, ``staleness_cap`` and ``no_twice_in_row``
options applied). Any other source policy: each target layer replays the share of its eligible entries
that the source replays at that depth (interpolated between source layers), at the highest TAS, and the
result is labelled ``policy: tas`` with one tau per layer. A workload with a threshold or a replay target
re-decides anyway (``cosim.traces.load._decide``).

``mlp_rel_error`` (the error replay would cause at an entry) goes through the same five steps with its own
normal scores and correlations; its innovation is correlated with the TAS innovation by the source's
entry-level (Pearson) correlation of the two normal scores, so the relation of error to TAS is kept as far
as the source shows one (0.03 on the shipped capture). Where the nearest
source entry was not measured (NaN) the target entry is NaN too; a layer without any measured error stays
NaN.

The replay ratio over eligible frames is preserved up to sampling; the overall ratio scales with
(T' - 1) / T' vs (T - 1) / T, since the first frame never replays.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from cosim.traces.schema import Trace, TraceError, TraceMeta

#: Correlation per whole axis assumed along an axis on which the source has one point only.
SINGLE_POINT_RHO = 0.5
#: Measured neighbour correlations are clipped into this range (the model needs 0 < rho < 1).
RHO_RANGE = (1e-3, 0.999)
#: Source ``extra`` keys that describe the layout of the rows and stay at the top level of a transfer.
_LAYOUT_KEYS = ("cfg", "cfg_layout", "cfg_scale")

METHOD = (
    "resampled (cosim.traces.transfer): per-layer normal scores of TAS, kriging on depth / grid / frames under "
    "an exponential correlation model fitted to the source's neighbour correlations, seeded correlated "
    "innovation to unit variance, CFG pairs kept, per-layer quantiles interpolated over depth"
)


class TransferError(TraceError):
    """A transfer that cannot be made. ``param`` names the :func:`transfer_trace` argument at fault
    (``trace`` for the source trace itself), ``reason`` says why, so a caller can name its own key."""

    def __init__(self, param: str, reason: str) -> None:
        self.param, self.reason = param, reason
        super().__init__(f"transfer {param}: {reason}")


def grid_shape(n: int) -> tuple[int, int]:
    """Most square (rows, cols) with rows * cols = n and rows <= cols."""
    r = int(math.isqrt(n))
    while n % r:
        r -= 1
    return r, n // r


def _pairs(meta: TraceMeta) -> tuple[bool, int]:
    cfg = bool(meta.extra.get("cfg", False)) and meta.batch % 2 == 0
    return cfg, meta.batch // 2 if cfg else meta.batch


def _check_frames(src: int, dst: int) -> None:
    if dst > 1 and src < 2:
        raise TransferError(
            "trace",
            f"the source trace has {src} frame; {dst} frames need a source with at least 2 "
            f"(frame 0 never replays, so a one-frame trace holds no replay decision to copy)",
        )


# ---------------------------------------------------------------------------------------------------
# Statistics of the source
# ---------------------------------------------------------------------------------------------------


def _uniform_ranks(x: np.ndarray) -> np.ndarray:
    """(rank + 0.5) / n of a 1-d array, ties broken by position (deterministic)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(x.size)
    return (ranks + 0.5) / x.size


def _normal_scores(cube: np.ndarray) -> np.ndarray:
    """Per layer (axis 1), the rank normal scores of the finite entries (tied values share their mean
    rank, so a tie stays a tie); NaN entries score 0 (the mean)."""
    z = np.zeros(cube.shape)
    for layer in range(cube.shape[1]):
        values = cube[:, layer]
        ok = np.isfinite(values)
        if ok.any():
            scores = np.zeros(values.shape)
            scores[ok] = ndtri((rankdata(values[ok]) - 0.5) / ok.sum())
            z[:, layer] = scores
    return z


def _quadrant(a: np.ndarray, b: np.ndarray) -> float | None:
    """Correlation of a Gaussian copula with the same median-split agreement (Blomqvist's beta
    ``2 P(same side of the median) - 1``, as ``sin(pi beta / 2)``)."""
    a, b = a.ravel(), b.ravel()
    if a.size < 2:
        return None
    beta = float(np.mean(np.sign(a - np.median(a)) * np.sign(b - np.median(b))))
    return math.sin(math.pi * beta / 2)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a.ravel(), b.ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _clip(rho: float | None) -> float:
    return float(np.clip(rho, *RHO_RANGE)) if rho is not None and np.isfinite(rho) else float("nan")


def _neighbour_correlations(z: np.ndarray, cfg: bool) -> dict:
    """Correlations of neighbours in normal scores ``z`` (B, L, Te, R, C): one per depth gap, and per
    source layer between consecutive frames, grid rows, grid columns and CFG copies (None where the
    source has no such neighbours)."""
    b, layers, te, rows, cols = z.shape
    per = range(layers)
    return {
        "depth": [_quadrant(z[:, i], z[:, i + 1]) for i in range(layers - 1)],
        "time": [_quadrant(z[:, i, 1:], z[:, i, :-1]) if te > 1 else None for i in per],
        "rows": [_quadrant(z[:, i, :, 1:, :], z[:, i, :, :-1, :]) if rows > 1 else None for i in per],
        "cols": [_quadrant(z[:, i, ..., 1:], z[:, i, ..., :-1]) if cols > 1 else None for i in per],
        "cfg": [_quadrant(z[: b // 2, i], z[b // 2 :, i]) if cfg else None for i in per],
    }


# ---------------------------------------------------------------------------------------------------
# One axis: kriging weights, explained variance, innovation correlation per target step
# ---------------------------------------------------------------------------------------------------


class _Axis:
    """Target points ``(j + 0.5) / dst`` on source points ``(i + 0.5) / src`` of one axis, under an
    exponential correlation model with ``gap_rho[i]`` between source points i and i + 1."""

    def __init__(self, src: int, dst: int, gap_rho: list[float]) -> None:
        self.weights = np.zeros((dst, src))
        self.explained = np.zeros(dst)  # variance of the conditional mean (model)
        self.nearest = np.zeros(dst, int)
        self.lower = np.zeros(dst, int)  # linear (not kriging) interpolation: quantiles, per-layer values
        self.frac = np.zeros(dst)
        if src == 1:
            dist = np.abs((np.arange(dst) + 0.5) / dst - 0.5)
            alpha = SINGLE_POINT_RHO**dist
            self.weights[:, 0], self.explained[:] = alpha, alpha**2
            self.step_rho = np.full(max(dst - 1, 0), SINGLE_POINT_RHO ** (1 / dst))
            return
        rho = np.array(gap_rho, float)
        x = (np.arange(dst) + 0.5) * src / dst - 0.5  # in source spacings, source point i at x = i
        for j, xj in enumerate(x):
            if xj <= 0 or xj >= src - 1:
                end, r = (0, rho[0]) if xj <= 0 else (src - 1, rho[-1])
                alpha = r ** abs(xj - end)
                self.weights[j, end], self.explained[j] = alpha, alpha**2
                continue
            i = int(np.floor(xj))
            w, r = xj - i, rho[i]
            p0, p1 = r**w, r ** (1 - w)  # model correlation with source points i and i + 1
            alpha = (p0 - r * p1) / (1 - r * r)
            beta = (p1 - r * p0) / (1 - r * r)
            self.weights[j, i], self.weights[j, i + 1] = alpha, beta
            self.explained[j] = alpha * p0 + beta * p1
        self.nearest = np.clip(np.rint(x), 0, src - 1).astype(int)
        xq = np.clip(x, 0, src - 1)
        self.lower = np.minimum(np.floor(xq).astype(int), src - 2)
        self.frac = xq - self.lower
        gap = np.clip(np.floor((x[:-1] + x[1:]) / 2).astype(int), 0, src - 2)
        self.step_rho = rho[gap] ** (src / dst)

    def over_depth(self, values: np.ndarray) -> np.ndarray:
        """Per-source-layer ``values`` (L, ...) linearly interpolated to the target layers (L', ...)."""
        values = np.asarray(values, float)
        if values.shape[0] == 1:
            return np.repeat(values, self.frac.size, axis=0)
        w = self.frac.reshape(-1, *([1] * (values.ndim - 1)))
        return (1 - w) * values[self.lower] + w * values[self.lower + 1]


def _rho(value: float | None) -> float:
    r = _clip(value)
    return SINGLE_POINT_RHO if math.isnan(r) else r


class _Field:
    """The resampling of one normal-score cube (B, L, Te, R, C) onto (B', L', Te', R', C'): the
    conditional mean given the source (kriging per axis, per source layer on frames and grid with that
    layer's correlations, then over depth), the innovation's standard deviation, and the innovation's
    correlation per target step on every axis (per target layer on frames and grid)."""

    def __init__(self, z: np.ndarray, corr: dict, dst_shape: tuple, cfg: bool) -> None:
        _, layers, te, rows, cols = z.shape
        dl, dte, dr, dc = dst_shape
        gaps = [_rho(v) for v in corr["depth"]] or [SINGLE_POINT_RHO]
        self.depth = _Axis(layers, dl, gaps)
        self.planes = [  # per source layer: frames, rows, columns
            [
                _Axis(te, dte, [_rho(corr["time"][i])] * max(te - 1, 1)),
                _Axis(rows, dr, [_rho(corr["rows"][i])] * max(rows - 1, 1)),
                _Axis(cols, dc, [_rho(corr["cols"][i])] * max(cols - 1, 1)),
            ]
            for i in range(layers)
        ]
        explained = np.stack([np.einsum("a,b,c->abc", *(a.explained for a in p)) for p in self.planes])
        explained = self.depth.explained[:, None, None, None] * self.depth.over_depth(explained)
        self.sd = np.sqrt(np.clip(1.0 - explained, 0.0, None))  # (L', Te', R', C')
        # innovation correlation per step: depth per gap; frames / rows / columns per target layer
        # (log-linear over depth between the source layers' values)
        self.steps = [self.depth.step_rho[:, None]]
        for k in range(3):
            log_r = np.log(np.stack([p[k].step_rho for p in self.planes], axis=0))  # (L, steps)
            self.steps.append(np.exp(self.depth.over_depth(log_r)).T)  # (steps, L')
        self.cfg = self.depth.over_depth([_clip(v) if v is not None else 0.0 for v in corr["cfg"]])
        self.cfg = np.nan_to_num(self.cfg) if cfg else None

    def mean(self, z_rows: np.ndarray) -> np.ndarray:
        """Conditional mean (B', L', Te', R', C') of per-target-row source scores (B', L, Te, R, C)."""
        planes = []
        for i, axes in enumerate(self.planes):
            out = z_rows[:, i]
            for k, axis in enumerate(axes):
                out = np.moveaxis(np.tensordot(out, axis.weights, axes=([k + 1], [1])), -1, k + 1)
            planes.append(out)
        return np.moveaxis(np.tensordot(np.stack(planes, axis=1), self.depth.weights, axes=([1], [1])), -1, 1)

    def innovation(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        """Unit-variance Gaussian noise, AR(1) along each target axis; unconditional rows correlated with
        their conditional rows as the source's CFG copies are at that depth."""
        e = rng.standard_normal(shape)
        for k, rho in enumerate(self.steps):
            v = np.moveaxis(e, k + 1, 0)  # a view: the recursion writes through
            for i, r in enumerate(rho):  # depth: one value per step; others: one per target layer
                r = r.reshape(1, -1, 1, 1) if k else r.reshape(1, 1, 1, 1)
                v[i + 1] = r * v[i] + np.sqrt(1 - r * r) * v[i + 1]
        if self.cfg is not None:
            p = shape[0] // 2
            r = self.cfg.reshape(1, -1, 1, 1, 1)
            e[p:] = r * e[:p] + np.sqrt(1 - r * r) * e[p:]
        return e


def _to_marginals(field: np.ndarray, src: np.ndarray, depth: _Axis) -> np.ndarray:
    """Rank ``field`` (B, L', ...) within each target layer and map through the depth-interpolated
    quantile function of the source values ``src`` (B, L, ...) (finite entries; NaN if a layer has none).
    Overwrites and returns ``field``."""
    out = field
    layers = src.shape[1]
    sorted_layers = [np.sort(v[np.isfinite(v)]) for v in (src[:, i].ravel() for i in range(layers))]

    def quantile(i: int, u: np.ndarray) -> np.ndarray:
        s = sorted_layers[i]
        return np.interp(u * s.size - 0.5, np.arange(s.size), s) if s.size else np.full(u.shape, np.nan)

    for m in range(field.shape[1]):
        u = _uniform_ranks(field[:, m].ravel())
        if layers == 1:
            q = quantile(0, u)
        else:
            lo, w = depth.lower[m], depth.frac[m]
            q = (1 - w) * quantile(lo, u) + w * quantile(lo + 1, u)
        out[:, m] = q.reshape(field[:, m].shape)
    return out


# ---------------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------------


def _redecide(tas: np.ndarray, m: TraceMeta, src_replay: np.ndarray, depth: _Axis, n: int, cfg: bool):
    """Stored decisions (B', L', S') for the new TAS, the policy label, tau, and a note of the rule."""
    from cosim.traces.policies import cap_staleness

    layers = tas.shape[1]
    valid = ~np.isnan(tas)
    valid[:, :, :n] = False
    opts = m.extra.get("options") if isinstance(m.extra.get("options"), dict) else {}
    thr = m.threshold
    per_layer = isinstance(thr, list) and len(thr) == m.layers
    if m.policy == "tas" and (isinstance(thr, int | float) or per_layer):
        if per_layer:
            tau = depth.over_depth(thr)
            threshold: float | list[float] = [float(t) for t in tau]
        else:
            tau, threshold = np.full(layers, float(thr)), float(thr)
        score = np.where(valid, tas, np.nan)
        if opts.get("cfg_coherent") and cfg:  # rows [0, P) conditional, [P, 2P) their copies
            p = score.shape[0] // 2
            score = np.concatenate([(score[:p] + score[p:]) / 2] * 2)
        with np.errstate(invalid="ignore"):
            replay = score > tau[:, None] if opts.get("strict") else score >= tau[:, None]
        replay &= valid
        cap = 1 if opts.get("no_twice_in_row") else opts.get("staleness_cap")
        replay = cap_staleness(replay, n, cap if isinstance(cap, int) else None)
        return replay, "tas", threshold, "the source's tau (policy tas) applied to the transferred TAS"
    share = src_replay[:, :, m.tokens_per_frame :].mean(axis=(0, 2))  # per source layer, eligible frames
    replay = np.zeros(tas.shape, bool)
    taus = []
    for layer, s in enumerate(depth.over_depth(share)):
        values = tas[:, layer][valid[:, layer]]
        k = int(round(s * values.size))
        tau = float(np.sort(values)[::-1][k - 1]) if k > 0 else float(np.nextafter(values.max(), np.inf))
        replay[:, layer] = valid[:, layer] & (tas[:, layer] >= tau)
        taus.append(tau)
    rule = (
        f"source policy {m.policy!r}: per layer, the source's replay share at that depth, highest TAS first"
    )
    return replay, "tas", taus, rule


# ---------------------------------------------------------------------------------------------------
# The transfer
# ---------------------------------------------------------------------------------------------------


def _eligible(cube: np.ndarray, n: int, grid: tuple[int, int]) -> np.ndarray:
    """(B, L, T * N) -> (B, L, T - 1, R, C): the eligible frames on the token grid."""
    b, layers, steps = cube.shape
    return cube[:, :, n:].reshape(b, layers, steps // n - 1, *grid).astype(np.float64)


def _rows(cube: np.ndarray, row_src: np.ndarray, flips: list) -> np.ndarray:
    """Per target row, its source row's (L, Te, R, C) block, mirrored as ``flips`` says."""
    out = cube[row_src].copy()
    for r, (flip_h, flip_v) in enumerate(flips):
        if flip_v:
            out[r] = out[r, :, :, ::-1, :]
        if flip_h:
            out[r] = out[r, :, :, :, ::-1]
    return out


def transfer_trace(
    trace: Trace,
    *,
    layers: int,
    tokens_per_frame: int,
    frames: int,
    batch: int,
    seed: int,
    model: dict | None = None,
    source_path: str | None = None,
) -> Trace:
    """Resample ``trace`` onto (batch, layers, frames x tokens_per_frame); deterministic in ``seed``.

    ``model``: the target model's dims for ``meta.model`` (what the workload costs; default: only the
    target's layer count is known). The source's model, checkpoint (``source_detail``), file
    (``source_path``, when given), capture settings, the measured correlations and the method are kept
    under ``extra["transfer"]``. The result has ``source="transferred"`` and the original's
    ``source_detail`` (the checkpoint), so every report says "transferred from <checkpoint>". With CFG in
    the source, ``batch`` must be even and keeps the layout rows [0, B/2) conditional, [B/2, B)
    unconditional. The result keeps the source's ``integrity`` (an edited or unchecked source stays
    labelled so). A transfer that cannot be made raises :class:`TransferError` naming the argument at
    fault. The method is in the module docstring.
    """
    m = trace.meta
    dims = {"layers": layers, "tokens_per_frame": tokens_per_frame, "frames": frames, "batch": batch}
    for name, value in dims.items():
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise TransferError(name, f"the target {name} must be a positive integer, got {value!r}")
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise TransferError("seed", f"the seed must be a non-negative integer, got {seed!r}")
    if model is not None and not isinstance(model, dict):
        raise TransferError("model", f"the target model dims must be a mapping, got {type(model).__name__}")
    cfg, src_units = _pairs(m)
    if cfg and batch % 2:
        raise TransferError(
            "batch", f"the source trace holds CFG pairs, so the target batch must be even, got {batch}"
        )
    _check_frames(m.frames, frames)
    dst_units = batch // 2 if cfg else batch
    rng = np.random.default_rng(seed)
    order = rng.permutation(src_units)
    unit_src = np.array([order[u % src_units] for u in range(dst_units)])
    unit_flips = [(False, False)] * min(dst_units, src_units) + [
        (bool(a), bool(b)) for a, b in rng.integers(0, 2, size=(max(0, dst_units - src_units), 2))
    ]
    for u in range(src_units, dst_units):  # a reused unit must differ from its first use
        if unit_flips[u] == (False, False):
            unit_flips[u] = (True, False)
    if cfg:
        row_src = np.concatenate([unit_src, unit_src + src_units])
        flips = unit_flips * 2
    else:
        row_src, flips = unit_src, unit_flips

    n_src, n = m.tokens_per_frame, tokens_per_frame
    src_grid, grid = grid_shape(n_src), grid_shape(n)
    steps = frames * n
    tas = np.full((batch, layers, steps), np.nan, np.float32)  # decided on as stored
    replay = np.zeros((batch, layers, steps), bool)
    has_err = "mlp_rel_error" in trace.table.columns
    err = np.full((batch, layers, steps), np.nan) if has_err else None
    corr: dict = {}
    err_note: dict = {}
    policy, threshold, rule = m.policy, m.threshold, "frame 0 only: nothing to decide"
    if frames > 1:
        dst_shape = (layers, frames - 1, *grid)
        src_tas = _eligible(trace.tas_cube(), n_src, src_grid)
        z = _normal_scores(src_tas)
        corr = _neighbour_correlations(z, cfg)
        tas_field = _Field(z, corr, dst_shape, cfg)
        noise = tas_field.innovation(rng, (batch, *dst_shape))
        field = tas_field.mean(_rows(z, row_src, flips))
        field += tas_field.sd * noise
        tas[:, :, n:] = _to_marginals(field, src_tas, tas_field.depth).reshape(batch, layers, -1)
        del field
        replay, policy, threshold, rule = _redecide(tas, m, trace.replay_cube(), tas_field.depth, n, cfg)
        if has_err:
            src_err = _eligible(trace._cube("mlp_rel_error"), n_src, src_grid)
            measured = np.isfinite(src_err)
            ze = _normal_scores(src_err)
            corr_e = _neighbour_correlations(ze, cfg)
            c = _corr(z[measured], ze[measured]) if measured.sum() > 1 else None
            c = 0.0 if c is None else float(np.clip(c, -0.999, 0.999))
            err_field = _Field(ze, corr_e, dst_shape, cfg)
            noise_e = err_field.innovation(rng, noise.shape)
            noise_e *= math.sqrt(1 - c * c)
            noise_e += c * noise
            del noise
            field_e = err_field.mean(_rows(ze, row_src, flips))
            field_e += err_field.sd * noise_e
            del noise_e
            new_e = _to_marginals(field_e, src_err, err_field.depth)
            near = _rows(measured, row_src, flips)  # NaN where the nearest source entry is not measured
            for k, axis in enumerate([err_field.depth, *err_field.planes[0]]):
                near = np.take(near, axis.nearest, axis=k + 1)
            new_e[~near] = np.nan
            err[:, :, n:] = new_e.reshape(batch, layers, -1)
            err_note = {"correlations": corr_e, "tas_error_correlation": c}

    extra = {k: m.extra[k] for k in _LAYOUT_KEYS if k in m.extra}
    if cfg:
        extra["batch_labels"] = [m.extra.get("batch_labels", [None] * m.batch)[r] for r in row_src]
    extra["transfer"] = {
        "from": {
            "layers": m.layers,
            "tokens_per_frame": m.tokens_per_frame,
            "frames": m.frames,
            "batch": m.batch,
        },
        "to": dims,
        "seed": seed,
        "method": METHOD,
        "source_model": m.model,
        "source_detail": m.source_detail,
        "source_path": source_path,
        "source_policy": m.policy,
        "source_threshold": m.threshold,
        "source_extra": {k: v for k, v in m.extra.items() if k not in _LAYOUT_KEYS and k != "batch_labels"},
        "correlations": corr,
        "decisions": rule,
        "mlp_rel_error": err_note,
        "row_map": row_src.tolist(),
        "flips": [list(f) for f in flips],
    }
    meta = TraceMeta(
        layers=layers,
        frames=frames,
        tokens_per_frame=tokens_per_frame,
        batch=batch,
        source="transferred",
        source_detail=m.source_detail,
        policy=policy,
        threshold=threshold,
        model=dict(model) if model is not None else {"layers": layers},
        extra=extra,
        integrity=m.integrity,  # an edited or unchecked source stays labelled so after transfer
    )
    return Trace.from_arrays(tas, replay, meta, mlp_rel_error=err)
