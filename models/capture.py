"""Trace capture: generate videos with a replay policy, record every decision, measure quality vs dense.

``capture(settings)`` runs the plain dense generation and the policy's generation with the same seed and
the same random stream (Gumbel-max sampling with noise drawn independently of the logits), so every
difference in the output comes from replay. The policy's run really skips the replayed MLPs; the reuse
error is measured in a separate teacher-forced pass (fed the dense video), which computes every MLP.
Quality: PSNR and SSIM (scikit-image) of the decoded frames vs dense over the frames replay can change
(1..T-1; frame 0 is identical by construction) and over all frames, beside two baselines made from the
dense video itself (frozen first frame, copy of the previous frame); with ``quality_seeds > 1`` the mean
and spread over that many sampling seeds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity

from cosim.traces import Trace, TraceMeta, threshold_for_ratio
from models.checkpoint import DEFAULT_CHECKPOINT, is_hf_checkpoint, load_checkpoint, load_hf_checkpoint
from models.fastcar import DecodeOptions, DecodeResult, SamplingOptions, decode
from models.policies import POLICY_NAMES, DensePolicy, make_policy
from models.tokenizer import PatchVQ
from models.transformer import ARVideoTransformer

#: PSNR reported for identical videos (JSON has no infinity).
PSNR_IDENTICAL_DB = 100.0
QUALITY_COLUMNS = (
    "replay_ratio",
    "psnr_db",
    "ssim",
    "token_agreement",
    "forced_psnr_db",
    "forced_ssim",
    "forced_token_agreement",
    "mlp_rel_error",
    "psnr_db_all_frames",
    "ssim_all_frames",
)
#: Metrics whose mean and spread over sampling seeds a capture with ``quality_seeds > 1`` reports.
SEED_METRICS = (
    "replay_ratio",
    "psnr_db",
    "ssim",
    "psnr_db_all_frames",
    "ssim_all_frames",
    "token_agreement",
    "forced_psnr_db",
    "forced_ssim",
    "mlp_rel_error",
    "baseline_frozen_psnr_db",
    "baseline_copy_previous_psnr_db",
)


TAU_CALIBRATIONS = ("dense", "closed_loop")
#: closed-loop tau calibration: the largest |replay ratio - target| it accepts, and its most policy decodes
CLOSED_LOOP_TOLERANCE = 0.005
CLOSED_LOOP_DECODES = 8


@dataclass
class CaptureSettings:
    """What to capture. Policies: dense, tas, fixed_interval, random, input_similarity, topk, oracle.

    ``threshold``: tau for ``tas`` (a float, or one per layer), the interval in frames for
    ``fixed_interval``, delta for ``input_similarity``. ``target_replay_ratio`` (over all layers x steps x
    batch, first frame included): the budget of ``random``/``topk``/``oracle``/``fixed_interval``/
    ``input_similarity``; for ``tas`` without a threshold, tau is calibrated so that the dense run's TAS
    distribution would replay exactly that ratio (``tau_calibration="dense"``; the replaying run then lands
    near it, as replay changes later hidden states), or, with ``"closed_loop"``, re-chosen on the replaying
    run's own TAS until that run replays the ratio within :data:`CLOSED_LOOP_TOLERANCE` (at most
    :data:`CLOSED_LOOP_DECODES` decodes; the closest one is kept).

    ``checkpoint``: this project's safetensors file (default: the shipped model), or a Hugging Face
    Llama-family checkpoint (a directory with ``config.json``, or one ``.safetensors`` file with
    ``config.json`` beside it). A Hugging Face checkpoint has no video layout: ``frames`` and
    ``tokens_per_frame`` are required for it, and its prompt tokens are the last ``num_classes + 1``
    vocabulary ids (default ``num_classes``: one per prompt class, ``max(prompts) + 1``). This project's
    checkpoints carry their layout; a ``tokens_per_frame`` or ``num_classes`` that disagrees with it is an
    error.
    """

    checkpoint: str | None = None
    frames: int | None = None
    tokens_per_frame: int | None = None
    num_classes: int | None = None
    prompts: list[int] | int = 2
    cfg: bool = True
    cfg_scale: float = 3.0
    policy: str = "tas"
    threshold: float | list[float] | None = None
    target_replay_ratio: float | None = None
    tau_calibration: str = "dense"  # tas with a target: "dense" or "closed_loop" (above)
    query_pre_rope: bool = False  # TAS variant of the reference code: query before RoPE
    strict: bool = False  # TAS variant of the reference code: TAS > tau
    staleness_cap: int | None = None
    no_twice_in_row: bool = False
    cfg_coherent: bool = False
    sparse_sink_tokens: int = 0
    sparse_window: int | None = None
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0
    measure_mlp_error: bool = True  # the reuse error at every entry, in the teacher-forced pass
    teacher_forced_quality: bool = True  # also decode fed the dense video: per-step error without drift
    quality_seeds: int = 1  # sampling seeds seed, seed+1, ...: quality mean and spread over them
    threads: int | None = None  # torch threads; None = 1 for small models (hidden <= 512), else torch's

    def __post_init__(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICY_NAMES)}")
        if self.tau_calibration not in TAU_CALIBRATIONS:
            raise ValueError(
                f"unknown tau_calibration {self.tau_calibration!r}; choose one of {', '.join(TAU_CALIBRATIONS)}"
            )
        if self.quality_seeds < 1:
            raise ValueError(f"quality_seeds must be >= 1, got {self.quality_seeds}")


@dataclass
class CaptureResult:
    trace: Trace
    quality: dict[str, Any]
    videos: dict[str, np.ndarray] | None = None  # "dense" / "replay": (P, T, H, W, 3) float in [0, 1]
    tokens: dict[str, np.ndarray] = field(default_factory=dict)  # "dense" / "replay": (P, T*N)
    #: wall-clock numbers, kept out of ``quality`` and the trace so those stay byte-identical per seed
    timing: dict[str, float] = field(default_factory=dict)


_CACHE: dict[tuple, tuple[ARVideoTransformer, PatchVQ | None, dict[str, Any]]] = {}


def _signature(path: Path) -> tuple:
    """What identifies a checkpoint's current contents cheaply: path, size and mtime of its files."""
    try:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except OSError:  # missing or unreadable: the loader says so, and nothing is memoised
        return (str(path),)


def load_model(
    checkpoint: str | None,
    *,
    frames: int | None = None,
    tokens_per_frame: int | None = None,
    num_classes: int | None = None,
) -> tuple[ARVideoTransformer, PatchVQ | None, dict[str, Any], str]:
    """Load (and memoise) a checkpoint; returns model, tokenizer, training info and its display name.

    A Hugging Face checkpoint (see :class:`CaptureSettings`) is loaded with the video layout given
    (``frames``, ``tokens_per_frame``, ``num_classes``: required for it, ignored for this project's
    checkpoints, which carry theirs) and has no tokenizer (``None``): its pixel quality is not measured.
    An unusable checkpoint or tokenizer raises :class:`models.checkpoint.CheckpointError` (bad input)
    naming the file and the reason; nothing is memoised for it."""
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    hf = checkpoint is not None and is_hf_checkpoint(path)
    layout = (frames, tokens_per_frame, num_classes or 1) if hf else ()
    key = (_signature(path), *layout)
    if key not in _CACHE:
        if hf:
            if frames is None or tokens_per_frame is None:
                raise ValueError(
                    f"{path}: a Hugging Face checkpoint has no video layout: give frames and tokens_per_frame"
                )
            model, config = load_hf_checkpoint(
                path, frames=frames, tokens_per_frame=tokens_per_frame, num_classes=num_classes or 1
            )
            info = {"hf_config": str(config.file), "model_type": config.model_type}
            _CACHE[key] = (model, None, info)
        else:
            _CACHE[key] = load_checkpoint(path)
    # a label that does not depend on where the files lie (provenance.json has the command): the file, or a
    # Hugging Face checkpoint's folder (with the file, when one file of it was named)
    name = f"{path.parent.name}/{path.name}" if hf and path.is_file() else path.name
    return (*_CACHE[key], name)


def hf_num_classes(s: CaptureSettings) -> int:
    """Prompt classes a Hugging Face checkpoint is laid out with: ``num_classes``, else one per class id."""
    if s.num_classes is not None:
        return s.num_classes
    if isinstance(s.prompts, int):
        return max(s.prompts, 1)
    return max((int(p) for p in s.prompts), default=0) + 1


def load_for(s: CaptureSettings) -> tuple[ARVideoTransformer, PatchVQ | None, dict[str, Any], str]:
    """:func:`load_model` with the settings' layout; refuses a layout this project's checkpoint disagrees
    with (a Hugging Face checkpoint takes it)."""
    loaded = load_model(
        s.checkpoint, frames=s.frames, tokens_per_frame=s.tokens_per_frame, num_classes=hf_num_classes(s)
    )
    cfg, info = loaded[0].config, loaded[2]
    if "hf_config" not in info:
        for key, mine in (("tokens_per_frame", cfg.tokens_per_frame), ("num_classes", cfg.num_classes)):
            given = getattr(s, key)
            if given is not None and given != mine:
                raise ValueError(f"{key} {given}: the checkpoint {loaded[3]} has {mine}")
    return loaded


def prompt_labels(prompts: list[int] | int, num_classes: int) -> list[int]:
    if isinstance(prompts, int):
        if prompts < 1:
            raise ValueError("prompts must be >= 1")
        return [i % num_classes for i in range(prompts)]
    bad = [p for p in prompts if not 0 <= int(p) < num_classes]
    if bad or not prompts:
        raise ValueError(f"prompt class ids must be in [0, {num_classes}); got {list(prompts)}")
    return [int(p) for p in prompts]


def _options(s: CaptureSettings, sparse: bool = True, measure_error: bool = False) -> DecodeOptions:
    return DecodeOptions(
        query_pre_rope=s.query_pre_rope,
        strict=s.strict,
        staleness_cap=s.staleness_cap,
        no_twice_in_row=s.no_twice_in_row,
        cfg_coherent=s.cfg_coherent,
        sparse_sink_tokens=s.sparse_sink_tokens if sparse else 0,
        sparse_window=s.sparse_window if sparse else None,
        measure_mlp_error=measure_error,
    )


def _sampling(s: CaptureSettings) -> SamplingOptions:
    return SamplingOptions(
        cfg=s.cfg, cfg_scale=s.cfg_scale, temperature=s.temperature, top_k=s.top_k, seed=s.seed
    )


def _decoded(vq: PatchVQ | None, tokens: torch.Tensor, frames: int) -> np.ndarray | None:
    """(P, T, H, W, 3) frames in [0, 1]; None without a tokenizer (a Hugging Face checkpoint)."""
    return None if vq is None else vq.decode(tokens.reshape(tokens.shape[0], frames, -1)).numpy()


def _frame_scores(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (prompt, frame): mean squared error and SSIM of two (P, T, H, W, 3) videos."""
    mse = ((ref.astype(np.float64) - test) ** 2).mean(axis=(2, 3, 4))
    ssim = np.ones(mse.shape)
    for i, t in zip(*np.nonzero(mse), strict=True):
        ssim[i, t] = structural_similarity(ref[i, t], test[i, t], channel_axis=-1, data_range=1.0)
    return mse, ssim


def _psnr(mse: np.ndarray) -> float:
    """PSNR of the pooled squared error (all prompts and frames at once), capped for identical videos."""
    m = float(mse.mean())
    return PSNR_IDENTICAL_DB if m == 0 else min(float(10 * np.log10(1.0 / m)), PSNR_IDENTICAL_DB)


def _video_quality(
    ref: np.ndarray | None, test: np.ndarray | None, prefix: str = ""
) -> dict[str, float | None]:
    """PSNR and SSIM over frames 1.. (what replay can change) and over all frames (``*_all_frames``)."""
    keys = [f"{prefix}{m}" for m in ("psnr_db", "ssim", "psnr_db_all_frames", "ssim_all_frames")]
    if ref is None or test is None or ref.shape[1] < 2:
        return dict.fromkeys(keys)
    mse, ssim = _frame_scores(ref, test)
    values = (_psnr(mse[:, 1:]), float(ssim[:, 1:].mean()), _psnr(mse), float(ssim.mean()))
    return dict(zip(keys, values, strict=True))


def _baselines(dense: np.ndarray | None) -> dict[str, float | None]:
    """Quality of two replay-free stand-ins for frames 1.. against the dense video itself: the dense
    frame 0 frozen, and each dense frame shown one frame late (copy of the previous frame)."""
    keys = [f"baseline_{b}_{m}" for b in ("frozen", "copy_previous") for m in ("psnr_db", "ssim")]
    if dense is None or dense.shape[1] < 2:
        return dict.fromkeys(keys)
    later = dense[:, 1:]
    values = []
    for stand_in in (np.broadcast_to(dense[:, :1], later.shape), dense[:, :-1]):
        mse, ssim = _frame_scores(later, stand_in)
        values += [_psnr(mse), float(ssim.mean())]
    return dict(zip(keys, values, strict=True))


def seed_spread(qualities: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) over seeds of :data:`SEED_METRICS`."""
    out: dict[str, Any] = {"quality_seeds": len(qualities), "seeds": [q["seed"] for q in qualities]}
    for m in SEED_METRICS:
        values = [q[m] for q in qualities if q.get(m) is not None]
        if values:
            out[f"{m}_mean"] = float(np.mean(values))
            out[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


class _Session:
    """One model + prompts + seed; holds the dense reference so sweeps decode it once."""

    def __init__(self, s: CaptureSettings) -> None:
        self.model, self.vq, self.info, self.name = load_for(s)
        cfg = self.model.config
        self.frames = s.frames or cfg.frames
        self.labels = prompt_labels(s.prompts, cfg.num_classes)
        self.seed = s.seed
        ref_settings = CaptureSettings(
            **{**asdict(s), "policy": "dense", "sparse_sink_tokens": 0, "sparse_window": None}
        )
        self.saved_threads = torch.get_num_threads()
        # A tiny model decodes token by token with small tensors: thread hand-off costs more than it
        # saves, badly so on a shared CPU. Restored by close().
        threads = s.threads or (1 if cfg.dims.hidden <= 512 else None)
        if threads:
            torch.set_num_threads(threads)
        try:
            self.dense = decode(
                self.model, self.labels, self.frames, DensePolicy(), _options(ref_settings), _sampling(s)
            )
        except BaseException:
            self.close()
            raise
        self.dense_video = _decoded(self.vq, self.dense.tokens, self.frames)
        self.baselines = _baselines(self.dense_video)
        self._calib: dict[tuple, DecodeResult] = {}

    def close(self) -> None:
        torch.set_num_threads(self.saved_threads)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def calibration(self, s: CaptureSettings) -> DecodeResult:
        """The TAS distribution tau is chosen from: dense decisions under the run's attention setting."""
        if not s.sparse_sink_tokens and s.sparse_window is None and not s.query_pre_rope:
            return self.dense
        key = (s.sparse_sink_tokens, s.sparse_window, s.query_pre_rope)
        if key not in self._calib:
            self._calib[key] = decode(
                self.model, self.labels, self.frames, DensePolicy(), _options(s), _sampling(s)
            )
        return self._calib[key]

    def _closed_loop(self, s: CaptureSettings, tau: float, policy) -> tuple[DecodeResult, float, int]:
        """Replaying decodes until one replays the target: each next tau is the one the last decode's own
        TAS would have replayed the target at, bisecting inside the bracket of taus already seen when that
        step leaves it (replay falls as tau rises). Returns the closest decode, its tau, decodes made."""
        target = s.target_replay_ratio
        low, high = -np.inf, np.inf  # taus seen replaying more / less than the target
        tried = []  # (|miss|, decode, tau)
        while len(tried) < CLOSED_LOOP_DECODES:
            res = decode(self.model, self.labels, self.frames, policy(tau), _options(s), _sampling(s))
            miss = float(res.replay.mean()) - target
            tried.append((abs(miss), res, tau))
            if abs(miss) <= CLOSED_LOOP_TOLERANCE:
                break
            if miss > 0:
                low = max(low, tau)
            else:
                high = min(high, tau)
            step = threshold_for_ratio(res.tas, target)
            tau = step if low < step < high else (low + high) / 2 if np.isfinite(low + high) else step
        _, res, tau = min(tried, key=lambda t: t[0])  # the first of equally close ones
        return res, tau, len(tried)

    def run(self, s: CaptureSettings, keep_videos: bool = True) -> CaptureResult:
        """The policy's decode (skipping the replayed MLPs) and, unless both are switched off, the
        teacher-forced pass that measures per-step damage and the reuse error at every entry."""
        if s.seed != self.seed:
            raise ValueError(f"seed {s.seed}: this session decoded its dense reference with seed {self.seed}")
        threshold, tau_source, decodes = s.threshold, "given", 1
        if s.policy == "tas" and threshold is None:
            if s.target_replay_ratio is None:
                raise ValueError("policy 'tas' needs threshold or target_replay_ratio")
            threshold = threshold_for_ratio(self.calibration(s).tas, s.target_replay_ratio)
            tau_source = "calibrated"

        def policy(tau=None):
            return make_policy(
                s.policy,
                threshold=threshold if tau is None else tau,
                target_replay_ratio=None if s.policy == "tas" else s.target_replay_ratio,
                strict=s.strict,
            )

        sparse = bool(s.sparse_sink_tokens) or s.sparse_window is not None
        if s.policy == "dense" and not sparse:
            res = self.dense
        elif tau_source == "calibrated" and s.tau_calibration == "closed_loop":
            res, threshold, decodes = self._closed_loop(s, threshold, policy)
            tau_source = "closed_loop"
        else:
            res = decode(self.model, self.labels, self.frames, policy(), _options(s), _sampling(s))
        video = _decoded(self.vq, res.tokens, self.frames)
        forced_pass = (s.teacher_forced_quality or s.measure_mlp_error) and res is not self.dense
        fres = None
        if forced_pass:
            fres = decode(
                self.model,
                self.labels,
                self.frames,
                policy(),
                _options(s, measure_error=s.measure_mlp_error),
                _sampling(s),
                force_tokens=self.dense.tokens,
            )
        if fres is not None and s.teacher_forced_quality:
            forced = _video_quality(self.dense_video, _decoded(self.vq, fres.tokens, self.frames), "forced_")
            forced["forced_token_agreement"] = float((fres.tokens == self.dense.tokens).float().mean())
        elif s.teacher_forced_quality:  # the dense decode itself: nothing differs
            forced = _video_quality(self.dense_video, self.dense_video, "forced_")
            forced["forced_token_agreement"] = 1.0
        else:
            forced = dict.fromkeys(
                ("forced_psnr_db", "forced_ssim", "forced_psnr_db_all_frames", "forced_ssim_all_frames")
            )
            forced["forced_token_agreement"] = None
        if fres is not None and fres.mlp_rel_error is not None:
            err, decided = fres.mlp_rel_error, fres.replay
        else:  # no error pass; a policy that computes every MLP anyway (oracle) logs it in its own run
            err, decided = res.mlp_rel_error, res.replay
        mean_err = None if err is None and decided.any() else 0.0
        if err is not None and decided.any():
            mean_err = float(np.nanmean(err[decided]))
        cfg = self.model.config
        quality = {
            **_video_quality(self.dense_video, video),
            "token_agreement": float((res.tokens == self.dense.tokens).float().mean()),
            **forced,
            **self.baselines,
            "mlp_rel_error": mean_err,
            "replay_ratio": float(res.replay.mean()),
            "tau": float(threshold) if s.policy == "tas" and isinstance(threshold, (int, float)) else None,
            "threshold": float(threshold) if isinstance(threshold, (int, float)) else None,
            "tau_source": tau_source if s.policy == "tas" else None,
            "tau_decodes": decodes if s.policy == "tas" else None,
            "policy": s.policy,
            "seed": s.seed,
            "mlp_rows": res.mlp_rows,
            "mlp_rows_dense": self.dense.mlp_rows,
            "mlp_rows_error_pass": fres.mlp_rows if fres is not None else None,
            "reference": "dense generation, full attention, same seed and sampling noise",
            "checkpoint": self.name,
        }
        meta = TraceMeta(
            layers=cfg.dims.layers,
            frames=self.frames,
            tokens_per_frame=cfg.tokens_per_frame,
            batch=len(res.batch_labels),
            source="captured",
            source_detail=self.name,
            policy=s.policy,
            threshold=quality["threshold"],
            model=cfg.dims.model_dump(),
            extra={
                "cfg": s.cfg,
                "cfg_scale": s.cfg_scale,
                "cfg_layout": "rows [0, P) conditional, rows [P, 2P) unconditional copies of the same prompts",
                "batch_labels": res.batch_labels,
                "prompts": self.labels,
                "seed": s.seed,
                "per_layer_threshold": threshold if isinstance(threshold, list) else None,
                "target_replay_ratio": s.target_replay_ratio,
                "options": asdict(_options(s)),
                "mlp_rel_error": (
                    "teacher-forced pass: the policy fed the dense video, error at every entry of frames 1.."
                    if fres is not None and fres.mlp_rel_error is not None
                    else None
                ),
                "quality": _numbers(quality),
            },
        )
        trace = Trace.from_arrays(res.tas, res.replay, meta, mlp_rel_error=err)
        videos = {"dense": self.dense_video, "replay": video} if keep_videos and video is not None else None
        return CaptureResult(
            trace=trace,
            quality=quality,
            videos=videos,
            tokens={"dense": self.dense.tokens.numpy(), "replay": res.tokens.numpy()},
            timing={
                "decode_seconds": res.seconds,
                "dense_decode_seconds": self.dense.seconds,
                "decode_tokens_per_s": res.tokens.numel() / res.seconds,
            },
        )


def _numbers(quality: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in quality.items() if not isinstance(v, str)}


def capture(settings: CaptureSettings, progress: bool = True) -> CaptureResult:
    """Capture a Trace (source="captured") from the checkpoint with the settings' policy, plus quality.

    The trace and videos are those of ``settings.seed``; with ``quality_seeds = k > 1`` the same capture
    runs at seeds ``seed .. seed + k - 1`` too (each with its own dense reference and, for a budget, its
    own tau) and ``quality`` gains the mean and spread over them (``<metric>_mean``, ``<metric>_std``).
    ``progress`` prints one line per phase to stderr (the decode itself is a tight loop, timed instead).
    """
    import sys

    t0 = time.perf_counter()
    results: list[CaptureResult] = []
    for k in range(settings.quality_seeds):
        s = dataclasses.replace(settings, seed=settings.seed + k)
        with _Session(s) as session:
            if progress:
                print(
                    f"capture: seed {s.seed}: dense reference decoded in {session.dense.seconds:.2f}s",
                    file=sys.stderr,
                )
            results.append(session.run(s, keep_videos=k == 0))
    result = results[0]
    if len(results) > 1:
        result.quality.update(seed_spread([r.quality for r in results]))
        result.trace.meta.extra["quality"] = _numbers(result.quality)
    if progress:
        q = result.quality
        pixels = (
            f"PSNR={q['psnr_db']:.2f}dB SSIM={q['ssim']:.3f} (frames 1..)"
            if q["psnr_db"] is not None
            else f"token agreement={q['token_agreement']:.3f}"
        )
        print(
            f"capture: policy={settings.policy} replay={q['replay_ratio']:.3f} {pixels} "
            f"({time.perf_counter() - t0:.1f}s total)",
            file=sys.stderr,
        )
    return result


def tau_sweep(
    settings: CaptureSettings, taus: list[float] | np.ndarray, progress: bool = False
) -> pd.DataFrame:
    """tau -> replay ratio -> quality, one row per tau (policy forced to ``tas``; one dense reference).
    ``progress`` shows a bar on stderr, one step for the dense reference and one per tau: each is a
    decode of seconds to minutes that prints nothing on its own."""
    import sys

    from tqdm import tqdm

    base = CaptureSettings(**{**asdict(settings), "policy": "tas", "target_replay_ratio": None})
    taus = [float(tau) for tau in taus]
    rows = []
    with tqdm(
        total=len(taus) + 1, desc="tau sweep", unit="decode", file=sys.stderr, disable=not progress
    ) as bar:
        bar.set_postfix_str("dense reference")
        with _Session(base) as session:
            bar.update()
            for tau in taus:
                bar.set_postfix_str(f"tau={tau:g}")
                s = CaptureSettings(**{**asdict(base), "threshold": tau})
                q = session.run(s, keep_videos=False).quality
                rows.append({"tau": tau, **{k: q[k] for k in QUALITY_COLUMNS}})
                bar.update()
    return pd.DataFrame(rows)


def policy_comparison(
    settings: CaptureSettings, policies: list[str], target_ratio: float, progress: bool = False
) -> pd.DataFrame:
    """Every policy at the same budget (tas calibrated to it), one shared dense reference; ``progress``
    as for :func:`tau_sweep`, one step per policy after the reference."""
    import sys

    from tqdm import tqdm

    rows = []
    keys = QUALITY_COLUMNS
    with tqdm(
        total=len(policies) + 1, desc="policies", unit="decode", file=sys.stderr, disable=not progress
    ) as bar:
        bar.set_postfix_str("dense reference")
        with _Session(CaptureSettings(**{**asdict(settings), "policy": "dense"})) as session:
            bar.update()
            for name in policies:
                bar.set_postfix_str(name)
                target = None if name == "dense" else target_ratio
                s = CaptureSettings(
                    **{**asdict(settings), "policy": name, "threshold": None, "target_replay_ratio": target}
                )
                q = session.run(s, keep_videos=False).quality
                rows.append({"policy": name, **{k: q[k] for k in keys}})
                bar.update()
    return pd.DataFrame(rows)
