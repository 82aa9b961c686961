"""Figures and numbers for docs/model_card.md and docs/capture.md, from the shipped checkpoint.

    python -m models.figures --out docs/figures

Writes PNGs (matplotlib) and a CSV behind each plot, plus ``numbers.json`` with every number the docs
quote. Deterministic for the seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.capture import CaptureSettings, _Session, capture, load_model, policy_comparison, tau_sweep
from models.checkpoint import CHECKPOINT_DIR
from models.data import CLASS_NAMES, VideoSpec, make_dataset
from models.fastcar import teacher_forced_accuracy
from models.policies import threshold_for_ratio
from models.train import tokenize_dataset


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curve(out: Path, numbers: dict) -> None:
    log = json.loads((CHECKPOINT_DIR / "fastcar_tiny_train_log.json").read_text())
    curve = np.array(log["curve"])
    val = np.array(log["val_curve"])
    pd.DataFrame(curve, columns=["step", "train_loss"]).to_csv(out / "training_curve.csv", index=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    k = 20
    smooth = np.convolve(curve[:, 1], np.ones(k) / k, mode="valid")
    ax.plot(curve[:, 0], curve[:, 1], alpha=0.3, label="train (per step)")
    ax.plot(curve[k - 1 :, 0], smooth, label=f"train ({k}-step mean)")
    ax.plot(val[:, 0], val[:, 1], "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("fastcar-tiny training")
    fig.tight_layout()
    fig.savefig(out / "training_curve.png", dpi=120)
    plt.close(fig)
    numbers["training"] = {k: v for k, v in log.items() if k not in ("curve", "val_curve")}


def heldout_accuracy(numbers: dict, seed: int) -> None:
    """Next-frame token accuracy on fresh held-out videos (a seed the training never used)."""
    model, vq, _, _ = load_model(None)
    videos, labels = make_dataset(512, seed=10_000 + seed, spec=VideoSpec())
    tokens = tokenize_dataset(vq, videos)
    accs = [
        teacher_forced_accuracy(model, torch.as_tensor(labels[i : i + 64]), tokens[i : i + 64])
        for i in range(0, 512, 64)
    ]
    numbers["heldout"] = {
        "videos": 512,
        "next_frame_token_accuracy": float(np.mean([a for a, _ in accs])),
        "copy_previous_frame_accuracy": float(np.mean([c for _, c in accs])),
    }


def samples(out: Path, numbers: dict, seed: int) -> None:
    """One generated video per class (dense), next to a real video of the class."""
    model, vq, _, _ = load_model(None)
    n_cls = model.config.num_classes
    res = capture(CaptureSettings(prompts=list(range(n_cls)), policy="dense", seed=seed), progress=False)
    gen = res.videos["dense"]
    real, _ = make_dataset(n_cls, seed=123, spec=VideoSpec())
    real_lab = make_dataset(n_cls, seed=123, spec=VideoSpec())[1]
    plt = _plt()
    t = gen.shape[1]
    fig, axes = plt.subplots(n_cls, t, figsize=(t * 0.9, n_cls * 0.95))
    for c in range(n_cls):
        for f in range(t):
            ax = axes[c, f]
            ax.imshow(gen[c, f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if f == 0:
                ax.set_ylabel(CLASS_NAMES[c], fontsize=7, rotation=0, ha="right", va="center")
            if c == 0:
                ax.set_title(f"frame {f}", fontsize=7)
    fig.suptitle("fastcar-tiny samples (dense, CFG 3.0, one per class)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)
    # the same grid for real (tokenized and decoded) videos, for comparison
    fig, axes = plt.subplots(n_cls, t, figsize=(t * 0.9, n_cls * 0.95))
    rec = vq.decode(vq.encode(real)).numpy()
    for r in range(n_cls):
        for f in range(t):
            ax = axes[r, f]
            ax.imshow(rec[r, f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if f == 0:
                ax.set_ylabel(CLASS_NAMES[real_lab[r]], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("training data (procedural, through the tokenizer)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "data_examples.png", dpi=110)
    plt.close(fig)
    numbers["samples"] = {"classes": CLASS_NAMES, "seed": seed}


def tas_motion(out: Path, numbers: dict, seed: int) -> None:
    """TAS of tokens whose content changes between frames (moving object) vs unchanged (background)."""
    model, vq, _, _ = load_model(None)
    cfg = model.config
    n, t = cfg.tokens_per_frame, cfg.frames
    res = capture(
        CaptureSettings(prompts=list(range(cfg.num_classes)) * 2, policy="dense", seed=seed), progress=False
    )
    tas = res.trace.tas_cube()  # (B, L, S)
    p = len(res.trace.meta.extra["prompts"])
    toks = res.tokens["dense"]  # (P, S)
    # step s predicts token s and processes token s-1; label both ways
    out_changed = np.zeros((p, t * n), bool)
    out_changed[:, n:] = toks[:, n:] != toks[:, :-n]
    in_tok = np.concatenate([np.full((p, 1), -1), toks[:, :-1]], axis=1)
    in_changed = np.zeros((p, t * n), bool)
    in_changed[:, n + 1 :] = in_tok[:, n + 1 :] != in_tok[:, 1:-n]
    cond = tas[:p]  # conditional rows
    rows = []
    stats = {}
    for label, mask in (("output token changes", out_changed), ("input token changes", in_changed)):
        m = np.broadcast_to(mask[:, None, :], cond.shape)
        valid = ~np.isnan(cond)
        moving, static = cond[m & valid], cond[~m & valid]
        per_layer = [
            (
                float(np.nanmean(cond[:, li][mask & valid[:, li]])),
                float(np.nanmean(cond[:, li][~mask & valid[:, li]])),
            )
            for li in range(cond.shape[1])
        ]
        stats[label] = {
            "moving_mean_tas": float(moving.mean()),
            "static_mean_tas": float(static.mean()),
            "moving_fraction": float(mask[:, n:].mean()),
            "layers_where_moving_lower": int(sum(a < b for a, b in per_layer)),
            "per_layer_moving_static": per_layer,
        }
        for li, (a, b) in enumerate(per_layer):
            rows.append({"label": label, "layer": li, "moving_mean_tas": a, "static_mean_tas": b})
    pd.DataFrame(rows).to_csv(out / "tas_moving_vs_static.csv", index=False)
    numbers["tas_motion"] = stats
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    lab = "output token changes"
    mask = np.broadcast_to(out_changed[:, None, :], cond.shape)
    valid = ~np.isnan(cond)
    axes[0].hist(cond[~mask & valid], bins=60, alpha=0.6, density=True, label="static (token unchanged)")
    axes[0].hist(cond[mask & valid], bins=60, alpha=0.6, density=True, label="moving (token changes)")
    axes[0].set_xlabel("TAS (all layers, frames 1..)")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8)
    pl = np.array(stats[lab]["per_layer_moving_static"])
    axes[1].plot(pl[:, 1], "o-", label="static")
    axes[1].plot(pl[:, 0], "o-", label="moving")
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("mean TAS")
    axes[1].legend(fontsize=8)
    fig.suptitle(
        "Moving objects get lower TAS than static background (fastcar-tiny, dense decode)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(out / "tas_moving_vs_static.png", dpi=120)
    plt.close(fig)
    # a spatial view: one video, frame 3, mean TAS over layers on the token grid next to the frame
    fig, axes = plt.subplots(2, t - 1, figsize=((t - 1) * 1.3, 2.8))
    side = int(round(n**0.5))
    for f in range(1, t):
        axes[0, f - 1].imshow(res.videos["dense"][0, f], interpolation="nearest")
        grid = np.nanmean(cond[0, :, f * n : (f + 1) * n], axis=0).reshape(side, side)
        axes[1, f - 1].imshow(grid, cmap="viridis", interpolation="nearest")
        axes[0, f - 1].set_title(f"frame {f}", fontsize=7)
        for a in axes[:, f - 1]:
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_ylabel("frame", fontsize=7)
    axes[1, 0].set_ylabel("mean TAS", fontsize=7)
    fig.suptitle(f"TAS map ({CLASS_NAMES[0]}): dark = low TAS = compute", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tas_map.png", dpi=120)
    plt.close(fig)


SWEEP_RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.875)


def sweep(out: Path, numbers: dict, seed: int, prompts: int, progress: bool = False) -> None:
    """tau grid = the dense run's TAS quantiles at evenly spread replay shares, so the curve covers the
    whole range whatever the model's TAS scale; tau decreases down the table."""
    base = CaptureSettings(prompts=prompts, seed=seed)
    with _Session(CaptureSettings(**{**asdict(base), "policy": "dense"})) as ses:
        dense_tas = ses.dense.tas
    taus = [round(threshold_for_ratio(dense_tas, r), 3) for r in SWEEP_RATIOS]
    df = tau_sweep(base, taus, progress=progress)
    df.insert(1, "dense_share_at_tau", SWEEP_RATIOS)
    df.to_csv(out / "tau_sweep.csv", index=False)
    numbers["tau_sweep"] = df.to_dict(orient="records")
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.4))
    ax[0].plot(df.tau, df.replay_ratio, "o-")
    ax[0].invert_xaxis()
    ax[0].set_xlabel("tau (decreasing to the right)")
    ax[0].set_ylabel("replay ratio")
    ax[0].axhline(7 / 8, ls=":", c="gray")
    ax2 = ax[0].twinx()
    ax2.plot(df.tau, df.psnr_db.clip(upper=40), "s--", c="C1")
    ax2.set_ylabel("PSNR vs dense (dB, clipped at 40)", color="C1", fontsize=8)
    ax[1].plot(df.replay_ratio, df.psnr_db.clip(upper=40), "o-", label="PSNR (free-running)")
    ax[1].plot(df.replay_ratio, df.forced_psnr_db.clip(upper=40), "^-", label="PSNR (fed the dense video)")
    ax[1].legend(fontsize=7)
    ax[1].set_xlabel("replay ratio")
    ax[1].set_ylabel("PSNR vs dense (dB)")
    ax3 = ax[1].twinx()
    ax3.plot(df.replay_ratio, df.ssim, "s--", c="C2")
    ax3.set_ylabel("SSIM", color="C2")
    fig.suptitle("tau -> replay ratio -> quality (fastcar-tiny, TAS policy, uniform tau)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "tau_sweep.png", dpi=120)
    plt.close(fig)
    res = capture(
        CaptureSettings(prompts=prompts, seed=seed, policy="tas", target_replay_ratio=0.5), progress=False
    )
    per_layer = res.trace.replay_cube().mean(axis=(0, 2))
    numbers["per_layer_replay_at_50pct"] = {"tau": res.quality["tau"], "per_layer": per_layer.tolist()}
    pd.DataFrame({"layer": range(len(per_layer)), "replay_ratio": per_layer}).to_csv(
        out / "per_layer_replay.csv", index=False
    )


def replay_samples(out: Path, numbers: dict, seed: int) -> None:
    """The same prompts decoded dense and with TAS replay at 50% and 80%."""
    plt = _plt()
    labels = [0, 2, 5, 7]
    rows = []
    for target in (None, 0.5, 0.8):
        s = CaptureSettings(
            prompts=labels, seed=seed, policy="dense" if target is None else "tas", target_replay_ratio=target
        )
        r = capture(s, progress=False)
        rows.append(
            (
                ("dense" if target is None else f"TAS {r.quality['replay_ratio']:.0%}"),
                r.videos["replay"],
                r.quality,
            )
        )
    t = rows[0][1].shape[1]
    fig, axes = plt.subplots(len(labels) * 3, t, figsize=(t * 0.8, len(labels) * 3 * 0.82))
    for i in range(len(labels)):
        for j, (name, vids, _) in enumerate(rows):
            for f in range(t):
                ax = axes[i * 3 + j, f]
                ax.imshow(vids[i, f], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if f == 0:
                    ax.set_ylabel(
                        f"{CLASS_NAMES[labels[i]]}\n{name}", fontsize=6, rotation=0, ha="right", va="center"
                    )
    fig.suptitle("dense vs TAS replay, same seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "replay_samples.png", dpi=110)
    plt.close(fig)
    numbers["replay_samples"] = {
        name: {k: q[k] for k in ("replay_ratio", "psnr_db", "ssim", "tau")} for name, _, q in rows
    }


def policies(out: Path, numbers: dict, seed: int, prompts: int, progress: bool = False) -> None:
    base = CaptureSettings(prompts=prompts, seed=seed)
    names = ["tas", "topk", "fixed_interval", "random", "input_similarity", "oracle"]
    frames = []
    for target in (0.5, 0.75):
        df = policy_comparison(base, names, target, progress)
        df.insert(0, "target", target)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(out / "policies.csv", index=False)
    numbers["policies"] = df.to_dict(orient="records")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("docs/figures"),
        help="figures and numbers.json (default docs/figures)",
    )
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of every capture (default 0)")
    ap.add_argument(
        "--prompts", type=int, default=16, help="prompts of the sweep and policy steps (default 16)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: deterministic kernels)")
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only these steps (training heldout samples tas_motion sweep replay_samples policies; "
        "default all)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars (they show on a terminal only)")
    a = ap.parse_args(argv)
    progress = not a.quiet and sys.stderr.isatty()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "numbers.json"
    numbers = json.loads(path.read_text()) if path.exists() else {}
    steps = {
        "training": lambda: training_curve(a.out, numbers),
        "heldout": lambda: heldout_accuracy(numbers, a.seed),
        "samples": lambda: samples(a.out, numbers, a.seed),
        "tas_motion": lambda: tas_motion(a.out, numbers, a.seed),
        "sweep": lambda: sweep(a.out, numbers, a.seed, a.prompts, progress),
        "replay_samples": lambda: replay_samples(a.out, numbers, a.seed),
        "policies": lambda: policies(a.out, numbers, a.seed, a.prompts, progress),
    }
    for name, fn in steps.items():
        if a.only is None or name in a.only:
            print(f"figures: {name}", flush=True)
            fn()
            path.write_text(json.dumps(numbers, indent=1, default=float))
    numbers["settings"] = {"seed": a.seed, "prompts": a.prompts, "capture": asdict(CaptureSettings())}
    path.write_text(json.dumps(numbers, indent=1, default=float))


if __name__ == "__main__":
    main()
