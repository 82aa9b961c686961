"""How TAS behaves in a shipped model, against the paper's claims (docs/tas.md).

    python -m models.tas_study --out docs/figures/tas/fastcar-tiny                # the shipped tiny model
    python -m models.tas_study --checkpoint CKPT --out docs/figures/tas/NAME      # any of this project's

The probe runs the model teacher-forced over the dense videos it generated (one full forward pass per
video, which is what the dense decode computes step by step: tested) and records, at every entry of frames
1.., the TAS of every head with the query after RoPE (paper) and before it (reference code), and the
relative error ``||out[s - N] - out[s]|| / ||out[s]||`` replaying the previous frame's MLP output would make
there. The tau -> replay -> quality curve runs real captures (models.capture) at fixed taus over several
seeds. Writes CSVs, ``numbers.json`` and, with matplotlib (``pip install -e '.[docs]'``), PNG figures.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from cosim.traces import threshold_for_ratio
from models.transformer import ARVideoTransformer, apply_rope

#: Shares of the dense TAS values of frames 1.. at or above the taus the quality curve runs at.
CURVE_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class Probe:
    """Per-entry measurements of dense videos; frame 0 is NaN (no aligned token)."""

    tas_heads: np.ndarray  # (B, L, H, S) query after RoPE
    tas_heads_pre: np.ndarray  # (B, L, H, S) query before RoPE
    reuse_error: np.ndarray  # (B, L, S)
    tokens_per_frame: int

    @property
    def tas(self) -> np.ndarray:
        return self.tas_heads.mean(axis=2)

    @property
    def tas_pre(self) -> np.ndarray:
        return self.tas_heads_pre.mean(axis=2)


@torch.inference_mode()
def probe(model: ARVideoTransformer, labels: list[int], tokens: torch.Tensor, cfg: bool = True) -> Probe:
    """Teacher-forced pass over ``tokens`` (P, T*N), rows ``[cond..., uncond...]`` with CFG (both copies
    read the same tokens, as in decoding)."""
    c = model.config
    n, d = c.tokens_per_frame, c.dims
    rows = list(labels) + ([-1] * len(labels) if cfg else [])
    lab = torch.tensor(rows)
    seq = tokens.repeat(2, 1) if cfg else tokens
    ids = model.input_ids(lab, seq)
    b, s = ids.shape
    model.ensure_rope(s + 1)
    cos, sin = model.rope_cos[:s], model.rope_sin[:s]
    x = model.model.embed_tokens(ids)
    vec = model.class_vector(lab)
    if vec is not None:
        x = x + vec[:, None]
    group = d.heads // d.kv_heads
    scale = 1.0 / math.sqrt(d.head_dim)
    shape = (b, d.layers, d.heads, s)
    tas, tas_pre = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    err = np.full((b, d.layers, s), np.nan, np.float32)
    for li, layer in enumerate(model.model.layers):
        att = layer.self_attn
        h = layer.input_layernorm(x)
        q = att.q_proj(h).view(b, s, d.heads, d.head_dim).transpose(1, 2)
        k = att.k_proj(h).view(b, s, d.kv_heads, d.head_dim).transpose(1, 2)
        k_rot = apply_rope(k, cos, sin).repeat_interleave(group, dim=1)[:, :, :-n]  # key of s - n
        for out, query in ((tas, apply_rope(q, cos, sin)), (tas_pre, q)):
            out[:, li, :, n:] = ((query[:, :, n:] * k_rot).sum(-1) * scale).float().numpy()
        x = x + att(h, model.rope_cos, model.rope_sin)
        mlp = layer.mlp(layer.post_attention_layernorm(x))
        diff = (mlp[:, :-n] - mlp[:, n:]).norm(dim=-1) / mlp[:, n:].norm(dim=-1).clamp(min=1e-12)
        err[:, li, n:] = diff.float().numpy()
        x = x + mlp
    return Probe(tas, tas_pre, err, n)


def later_frames(a: np.ndarray, n: int) -> np.ndarray:
    """Entries of frames 1.. (the last axis is steps)."""
    return a[..., n:]


def distribution(p: Probe) -> pd.DataFrame:
    """TAS per layer and head (post-RoPE): mean, std and quantiles over every entry of frames 1.."""
    n = p.tokens_per_frame
    rows = []
    _, layers, heads, _ = p.tas_heads.shape
    for li in range(layers):
        for h in [*range(heads), None]:
            v = later_frames(p.tas[:, li] if h is None else p.tas_heads[:, li, h], n).ravel()
            q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
            rows.append(
                {"layer": li, "head": "mean" if h is None else h, "mean": v.mean(), "std": v.std()}
                | dict(zip(("q05", "q25", "median", "q75", "q95"), q, strict=True))
            )
    return pd.DataFrame(rows)


def prediction(p: Probe) -> pd.DataFrame:
    """How well TAS ranks the reuse error: Spearman correlation per layer (and head), post- and
    pre-RoPE. Replay wants high TAS where the error is low, so a good predictor is strongly negative."""
    n = p.tokens_per_frame
    rows = []
    _, layers, heads, _ = p.tas_heads.shape
    for li in range(layers):
        e = later_frames(p.reuse_error[:, li], n).ravel()
        for h in [None, *range(heads)]:
            post = p.tas[:, li] if h is None else p.tas_heads[:, li, h]
            pre = p.tas_pre[:, li] if h is None else p.tas_heads_pre[:, li, h]
            rows.append(
                {
                    "layer": li,
                    "head": "mean" if h is None else h,
                    "spearman_post_rope": spearmanr(later_frames(post, n).ravel(), e).statistic,
                    "spearman_pre_rope": spearmanr(later_frames(pre, n).ravel(), e).statistic,
                    "reuse_error_median": float(np.median(e)),
                }
            )
    return pd.DataFrame(rows)


def depth_profile(p: Probe, share: float = 0.5) -> pd.DataFrame:
    """Per-layer replay at one uniform tau that replays ``share`` of the entries of frames 1.. (post and
    pre-RoPE), the oracle's per-layer share at the same budget (lowest reuse error first), and the mean
    reuse error of what each replays."""
    n = p.tokens_per_frame
    out = {}
    for name, score in (("post_rope", p.tas), ("pre_rope", p.tas_pre), ("oracle", -p.reuse_error)):
        v = later_frames(score, n)
        tau = threshold_for_ratio(v, share)
        out[name] = v >= tau
    err = later_frames(p.reuse_error, n)
    layers = err.shape[1]
    return pd.DataFrame(
        {
            "layer": np.arange(layers),
            **{f"replay_{k}": v.mean(axis=(0, 2)) for k, v in out.items()},
            **{
                f"replayed_error_{k}": [float(err[:, li][v[:, li]].mean()) for li in range(layers)]
                for k, v in out.items()
            },
        }
    )


def decision_agreement(p: Probe, share: float = 0.5) -> float:
    """Share of entries where post- and pre-RoPE TAS decide alike at the same budget."""
    n = p.tokens_per_frame
    post, pre = later_frames(p.tas, n), later_frames(p.tas_pre, n)
    return float(
        ((post >= threshold_for_ratio(post, share)) == (pre >= threshold_for_ratio(pre, share))).mean()
    )


def merge(probes: list[Probe]) -> Probe:
    """Probes of several seeds as one batch."""
    return Probe(
        *(
            np.concatenate([getattr(p, k) for p in probes])
            for k in ("tas_heads", "tas_heads_pre", "reuse_error")
        ),
        tokens_per_frame=probes[0].tokens_per_frame,
    )


def quality_curve(checkpoint: str | None, prompts: int, seeds: int, taus: list[float]) -> pd.DataFrame:
    """Captures at fixed taus for seeds 0.. (one dense reference per seed): tau -> replay -> quality,
    mean and std over the seeds as a capture with ``quality_seeds`` reports them."""
    from tqdm import tqdm

    from models.capture import CaptureSettings, _Session, seed_spread

    runs: dict[float, list[dict]] = {float(t): [] for t in taus}
    with tqdm(total=seeds * len(taus), desc="tau curve", unit="capture") as bar:
        for seed in range(seeds):
            base = CaptureSettings(checkpoint=checkpoint, prompts=prompts, policy="tas", seed=seed)
            with _Session(base) as ses:
                for tau in runs:
                    s = CaptureSettings(**{**base.__dict__, "threshold": tau})
                    runs[tau].append(ses.run(s, keep_videos=False).quality)
                    bar.update()
    rows = []
    for tau, qualities in runs.items():
        spread = seed_spread(qualities)
        rows.append({"tau": tau} | {k: v for k, v in spread.items() if k.endswith(("_mean", "_std"))})
    return pd.DataFrame(rows)


def run(checkpoint: str | None, out: Path, prompts: int, seeds: int) -> dict:
    from models.capture import CaptureSettings, _Session

    t0 = time.perf_counter()
    probes = []
    for seed in range(seeds):
        s = CaptureSettings(checkpoint=checkpoint, prompts=prompts, policy="dense", seed=seed)
        with _Session(s) as ses:
            probes.append(probe(ses.model, ses.labels, ses.dense.tokens, cfg=s.cfg))
            name, dims = ses.name, ses.model.config.dims
    p = merge(probes)
    n = p.tokens_per_frame
    out.mkdir(parents=True, exist_ok=True)
    dist, pred, depth = distribution(p), prediction(p), depth_profile(p)
    for frame, file in ((dist, "distribution"), (pred, "prediction"), (depth, "depth_profile")):
        frame.to_csv(out / f"{file}.csv", index=False, float_format="%.6g")
    later = later_frames(p.tas, n)
    means = pred[pred["head"] == "mean"]
    numbers = {
        "checkpoint": name,
        "layers": dims.layers,
        "heads": dims.heads,
        "prompts": prompts,
        "seeds": seeds,
        "entries": int(np.isfinite(p.tas).sum()),
        "tas_mean": float(np.nanmean(p.tas)),
        "tas_quantiles_05_50_95": [float(x) for x in np.nanquantile(p.tas, [0.05, 0.5, 0.95])],
        "share_negative": float((later < 0).mean()),
        "spearman_post_rope_per_layer": means.spearman_post_rope.round(3).tolist(),
        "spearman_pre_rope_per_layer": means.spearman_pre_rope.round(3).tolist(),
        "spearman_pooled_post_rope": float(
            spearmanr(later.ravel(), later_frames(p.reuse_error, n).ravel()).statistic
        ),
        "decision_agreement_pre_post_at_50pct": decision_agreement(p),
        "replay_per_layer_at_50pct_post_rope": depth.replay_post_rope.round(3).tolist(),
        "replay_per_layer_at_50pct_pre_rope": depth.replay_pre_rope.round(3).tolist(),
        "replay_per_layer_at_50pct_oracle": depth.replay_oracle.round(3).tolist(),
    }
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")  # before the long part
    taus = [threshold_for_ratio(later, share) for share in CURVE_SHARES]
    numbers["tau_for_share"] = dict(zip([str(x) for x in CURVE_SHARES], taus, strict=True))
    curve = quality_curve(checkpoint, prompts, seeds, taus)
    curve.to_csv(out / "curve.csv", index=False, float_format="%.6g")
    numbers["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    try:
        from models.tas_figures import write_figures
    except ImportError as exc:  # matplotlib is a docs extra
        print(f"tas_study: no figures ({exc}); pip install -e '.[docs]'")
    else:
        write_figures(out)
    return numbers


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", default=None, help="this project's checkpoint (default: the shipped tiny one)"
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="directory for the CSVs, numbers.json and figures"
    )
    ap.add_argument(
        "--prompts", type=int, default=8, help="prompts per seed (class i mod classes), CFG doubles"
    )
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds 0.. for the probe and the curve")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(json.dumps(run(a.checkpoint, a.out, a.prompts, a.seeds), indent=1))


if __name__ == "__main__":
    main()
