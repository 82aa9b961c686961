"""The figures of docs/tas.md (matplotlib, a docs extra), drawn from the CSVs models.tas_study writes.

python -m models.tas_figures docs/figures/tas/fastcar-tiny
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figures(out: Path) -> None:
    plt = _plt()
    dist, pred, depth = (
        pd.read_csv(out / f"{f}.csv") for f in ("distribution", "prediction", "depth_profile")
    )
    curve = pd.read_csv(out / "curve.csv") if (out / "curve.csv").is_file() else None
    layers = int(depth.layer.max()) + 1
    heads = int(pd.to_numeric(dist["head"], errors="coerce").max()) + 1

    fig, ax = plt.subplots(figsize=(8, 3.6))
    per_layer = dist[dist["head"] == "mean"].sort_values("layer")
    boxes = [
        {"whislo": r.q05, "q1": r.q25, "med": r.median, "q3": r.q75, "whishi": r.q95, "label": str(r.layer)}
        for r in per_layer.itertuples()
    ]
    ax.bxp(boxes, positions=range(layers), showfliers=False)
    per_head = dist[dist["head"] != "mean"].astype({"layer": int})
    ax.scatter(per_head.layer + 0.25, per_head["mean"], s=10, c="C1", label="mean of one head")
    ax.axhline(0, c="grey", lw=0.5)
    ax.set(xlabel="layer", ylabel="TAS (logit)", title="TAS per layer (box: 5-25-50-75-95%, mean of heads)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tas_distribution.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for col, label, style in (
        ("replay_post_rope", "TAS, query after RoPE (paper)", "o-"),
        ("replay_pre_rope", "TAS, query before RoPE (reference code)", "s--"),
        ("replay_oracle", "oracle: lowest reuse error", "^:"),
    ):
        ax.plot(depth.layer, depth[col], style, label=label)
    ax.set(
        xlabel="layer",
        ylabel="replayed share",
        ylim=(0, 1),
        title="Depth profile at one tau, 50% of frames 1..",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tas_depth_profile.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, layout="constrained")
    fig.suptitle("Spearman correlation of TAS with the reuse error, per head (good predictor: -1)")
    heads_only = pred[pred["head"] != "mean"]
    for ax, col, title in (
        (axes[0], "spearman_post_rope", "query after RoPE (paper)"),
        (axes[1], "spearman_pre_rope", "query before RoPE (reference code)"),
    ):
        grid = (
            heads_only.astype({"head": int}).pivot(index="head", columns="layer", values=col).to_numpy(float)
        )
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        for (h, li), v in np.ndenumerate(grid):
            ax.text(li, h, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set(xlabel="layer", title=title)
        ax.set_xticks(range(layers))
        ax.set_yticks(range(heads))
    axes[0].set_ylabel("head")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(out / "tas_prediction.png", dpi=110)
    plt.close(fig)

    if curve is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].errorbar(curve.tau, curve.replay_ratio_mean, curve.replay_ratio_std, fmt="o-", capsize=3)
    axes[0].set(xlabel="tau", ylabel="replay ratio (all frames)", title="tau -> replay")
    ax = axes[1]
    ax.errorbar(
        curve.replay_ratio_mean,
        curve.psnr_db_mean,
        curve.psnr_db_std,
        fmt="o-",
        capsize=3,
        label="TAS, free-running",
    )
    ax.errorbar(
        curve.replay_ratio_mean,
        curve.forced_psnr_db_mean,
        curve.forced_psnr_db_std,
        fmt="^--",
        capsize=3,
        label="TAS, fed the dense video",
    )
    for col, label, style in (
        ("baseline_copy_previous_psnr_db_mean", "dense shown one frame late", ":"),
        ("baseline_frozen_psnr_db_mean", "dense frame 0 frozen", "-."),
    ):
        ax.axhline(curve[col].mean(), ls=style, c="grey", label=label)
    ax.set(
        xlabel="replay ratio",
        ylabel="PSNR vs dense, frames 1.. (dB)",
        title="replay -> quality (mean +- std over seeds)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "tas_quality_curve.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path, help="a models.tas_study output directory")
    write_figures(ap.parse_args(argv).directory)


if __name__ == "__main__":
    main()
