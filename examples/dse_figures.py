"""Figures of docs/dse.md from the results of the design-space sweeps in examples/.

    python -m cosim sweep examples/dse_u280_best.yaml --out runs/sweeps/dse_u280_best --jobs 2
    python -m cosim sweep examples/dse_u280_best_grid.yaml --out runs/sweeps/dse_u280_best_grid --jobs 2
    python -m cosim sweep examples/dse_bandwidth.yaml --out runs/sweeps/dse_bandwidth --jobs 2
    python -m cosim sweep examples/dse_long_video.yaml --out runs/sweeps/dse_long_video --jobs 2
    python -m cosim sweep examples/dse_drs.yaml --out runs/sweeps/dse_drs --jobs 2
    python examples/dse_figures.py [--runs runs/sweeps] [--out docs/figures] [--only a b c d]

Each figure is a PNG with the CSV of exactly what it plots beside it. Everything comes from the sweeps'
``results.csv``, except the memory footprints of study (c), which a sweep cannot record (summary.json has
no such key): they come from the simulator's capacity model (``cosim.config.memory_use``), for the same
workloads the sweep ran, against the board's real capacities (the sweep raised the HBM capacity so that
every point could run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT))

GIB = float(1 << 30)
BW = "hardware.memory.hbm.bandwidth_GBps"
RATIO = "policy.target_replay_ratio"
SHARED = "hardware.weights_shared_across_batch"
REPLAY_CACHE = "hardware.placement.replay_cache"
FRAMES = "video.frames"
KV = "hardware.placement.kv_cache"
CORES = "hardware.cores"
PROMPTS = "video.prompts"
SCHEDULERS = ("off", "round_robin", "least_loaded")


def results(runs: Path, name: str) -> pd.DataFrame:
    path = runs / name / "results.csv"
    if not path.is_file():
        sys.exit(f"{path}: not found; run: python -m cosim sweep examples/{name}.yaml --out {runs / name}")
    df = pd.read_csv(path)
    bad = df[df["status"] != "done"]
    if len(bad):
        sys.exit(f"{path}: {len(bad)} points did not finish (status {bad['status'].iloc[0]})")
    return df


def save(fig, df: pd.DataFrame, out: Path, stem: str) -> None:
    fig.savefig(out / f"{stem}.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    df.to_csv(out / f"{stem}.csv", index=False, float_format="%.8g")
    print(f"wrote {out / stem}.png and .csv ({len(df)} rows)")


# ---------------------------------------------------------------------------------------------------
# (a) the best U280 design
# ---------------------------------------------------------------------------------------------------

DESIGN = ["hardware.cores", "hardware.lanes_per_core", "hardware.weight_buffer_KiB", "policy.kind", RATIO]
DESIGN += ["scheduler.drs"]


def u280_best(runs: Path, out: Path) -> None:
    """Every design of the grid (latency against quality), the true front, and what the search ran."""
    grid = results(runs, "dse_u280_best_grid")
    search = results(runs, "dse_u280_best")
    search = search[search["stage"] == "screen"]
    true_front = set(pd.read_csv(runs / "dse_u280_best_grid" / "pareto.csv")["key"])
    found_front = set(pd.read_csv(runs / "dse_u280_best" / "pareto.csv")["key"])
    cols = ["key", *DESIGN, "latency_s", "energy_j", "quality_psnr_db", "luts", "dsps", "constraints_met"]
    data = grid[cols].copy()
    data["on_true_front"] = data["key"].isin(true_front)
    data["run_by_search"] = data["key"].isin(set(search["key"]))
    data["on_search_front"] = data["key"].isin(found_front)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, x, label in ((a1, "latency_s", "latency (s)"), (a2, "luts", "LUTs (RTL estimate)")):
        bad, ok = data[~data["constraints_met"]], data[data["constraints_met"]]
        ax.scatter(bad[x], bad["quality_psnr_db"], s=6, c="#cccccc", label="violates a constraint")
        ax.scatter(ok[x], ok["quality_psnr_db"], s=8, c="#4c78a8", label="feasible")
        ran = data[data["run_by_search"]]
        ax.scatter(
            ran[x],
            ran["quality_psnr_db"],
            s=22,
            facecolors="none",
            edgecolors="#f58518",
            label="run by NSGA-II",
        )
        front = data[data["on_true_front"]]
        ax.scatter(
            front[x], front["quality_psnr_db"], s=40, marker="*", c="#e45756", label="true Pareto front"
        )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("quality estimate: PSNR vs dense (dB, tiny model)")
        ax.grid(True, alpha=0.3)
    a1.axhline(18.0, color="k", lw=0.8, ls="--")
    a2.axvline(1303680, color="k", lw=0.8, ls="--")
    a1.legend(fontsize=8)
    a1.set_title("3,072 designs: latency against quality (floor 18 dB)", fontsize=10)
    a2.set_title("LUTs against quality (U280: 1,303,680 LUTs)", fontsize=10)
    save(fig, data, out, "dse_u280_best")


# ---------------------------------------------------------------------------------------------------
# (b) memory bandwidth
# ---------------------------------------------------------------------------------------------------


def log_bandwidth_axis(ax) -> None:
    ax.set_xscale("log")
    ticks = [19.2, 30, 50, 75, 100, 150, 200, 300, 460]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("peak bandwidth of the memory holding weights and KV cache (GB/s; 70% sustained)")


def bandwidth(runs: Path, out: Path) -> None:
    df = results(runs, "dse_bandwidth")
    df = df[df[REPLAY_CACHE] == "ddr4"].sort_values([SHARED, RATIO, BW])
    cols = [BW, SHARED, RATIO, "speedup_vs_dense", "latency_s", "dense_latency_s"]
    cols += ["core_utilization", "memory_bandwidth_utilization", "energy_j", "dense_energy_j"]
    data = df[cols].reset_index(drop=True)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = plt.cm.viridis([0.0, 0.33, 0.62, 0.85])
    for color, ratio in zip(colors, sorted(data[RATIO].unique()), strict=True):
        for shared, style in ((True, "-o"), (False, "--")):
            d = data[(data[RATIO] == ratio) & (data[SHARED] == shared)]
            label = f"{ratio:.0%} replay" + ("" if shared else ", weights per entry")
            ax.plot(d[BW], d["speedup_vs_dense"], style, color=color, ms=3, label=label)
    for x, name in ((19.2, "KV260 DDR4"), (460, "U280 HBM")):
        ax.axvline(x, color="grey", lw=0.8, ls=":")
        ax.text(
            x, 0.99, name, rotation=90, ha="right", va="top", fontsize=8, transform=ax.get_xaxis_transform()
        )
    log_bandwidth_axis(ax)
    ax.set_ylabel("speedup vs dense (x)")
    ax.set_title("(b) FastCar speedup vs memory bandwidth (paper workload, DRS on)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save(fig, data, out, "dse_bandwidth_speedup")

    sel = data[data[RATIO] == 0.5]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for shared, color, name in ((True, "C0", "weights shared (preset)"), (False, "C3", "weights per entry")):
        d = sel[sel[SHARED] == shared]
        ax.plot(d[BW], d["dense_latency_s"], "--", color=color, label=f"dense, {name}")
        ax.plot(d[BW], d["latency_s"], "-o", color=color, ms=3, label=f"FastCar 50%, {name}")
    log_bandwidth_axis(ax)
    ax.set_yscale("log")
    yticks = [400, 500, 700, 1000, 1500, 2000, 3000, 5000]
    ax.set_yticks(yticks, [f"{t:g}" for t in yticks])
    ax.minorticks_off()
    ax.set_ylabel("decode latency (s)")
    ax.set_title("(b) latency at 50% replay: where each run turns memory-bound")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, sel.reset_index(drop=True), out, "dse_bandwidth_latency")


# ---------------------------------------------------------------------------------------------------
# (c) long videos
# ---------------------------------------------------------------------------------------------------


def footprints(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per row of the long-video sweep: what each memory group holds (cosim.config.memory_use) and whether
    it fits the board's real capacities; and per placement the longest video (in frames) that fits."""
    from cosim.config import load_yaml, memory_use, resolve

    spec_path = EXAMPLES / "dse_long_video.yaml"
    spec = load_yaml(spec_path)
    base = load_yaml((spec_path.parent / spec["base"]).resolve())
    # the sweep's fixed overrides less the raised capacity: the board's real memory (resolve, unlike
    # cosim.load, does not refuse a workload whose data do not fit)
    fixed = {k: v for k, v in spec["fixed"].items() if not k.endswith("capacity_GiB")}

    def use(point: dict) -> dict:
        groups = memory_use(resolve(base, values={**fixed, **point}))
        row = {f"{g}_need_GiB": u.need_bytes / GIB for g, u in groups.items()}
        row.update({f"{g}_capacity_GiB": u.capacity_bytes / GIB for g, u in groups.items()})
        for u in groups.values():
            for h in u.holdings:
                row[h.what.replace(" ", "_") + "_GiB"] = h.bytes / GIB
        row["fits_memory"] = all(u.fits for u in groups.values())
        return row

    rows = [use({FRAMES: int(r[FRAMES]), KV: r[KV], RATIO: float(r[RATIO])}) for _, r in df.iterrows()]
    out = pd.concat([df.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    limit = {}
    for kv in sorted(df[KV].unique()):
        frames = 2  # the shortest video the schema takes; it fits either way
        while frames < 1024 and use({FRAMES: frames + 1, KV: kv, RATIO: 0.5})["fits_memory"]:
            frames += 1
        limit[kv] = frames
    return out, limit


def long_video(runs: Path, out: Path) -> None:
    df = results(runs, "dse_long_video").sort_values([KV, RATIO, FRAMES])
    cols = [FRAMES, KV, RATIO, "speedup_vs_dense", "latency_s", "dense_latency_s", "tokens_per_s"]
    cols += ["tokens_per_j", "core_utilization", "memory_bandwidth_utilization"]
    data, limit = footprints(df[cols])
    print(f"longest video that fits the board's memory (frames of 256 tokens, 50% replay): {limit}")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kv, color in (("hbm", "C0"), ("ddr4", "C1")):
        for ratio, style in ((0.5, "-o"), (0.8, "--s")):
            d = data[(data[KV] == kv) & (data[RATIO] == ratio)]
            a1.plot(
                d[FRAMES], d["speedup_vs_dense"], style, color=color, ms=4, label=f"KV in {kv}, {ratio:.0%}"
            )
            miss = d[~d["fits_memory"]]
            a1.plot(miss[FRAMES], miss["speedup_vs_dense"], "x", color="red", ms=8, mew=2)
    a1.plot([], [], "x", color="red", ms=8, mew=2, label="does not fit the U280's memory")
    a1.set_xlabel("video frames (256 tokens each)")
    a1.set_ylabel("speedup vs dense (x)")
    a1.set_title("(c) speedup vs video length")
    a1.set_xticks(sorted(data[FRAMES].unique()))
    a1.grid(True, alpha=0.3)
    a1.legend(fontsize=8)

    d = data[data[RATIO] == 0.5]
    for kv, color in (("hbm", "C0"), ("ddr4", "C1")):
        x = d[d[KV] == kv]
        a2.plot(x[FRAMES], x["hbm_need_GiB"], "-o", color=color, ms=4, label=f"HBM need, KV in {kv}")
        a2.plot(x[FRAMES], x["ddr4_need_GiB"], "--s", color=color, ms=4, label=f"DDR4 need, KV in {kv}")
    a2.plot(d[d[KV] == "hbm"][FRAMES], d[d[KV] == "hbm"]["KV_cache_GiB"], ":", color="k", label="KV cache")
    a2.axhline(d["hbm_capacity_GiB"].iloc[0], color="C0", lw=0.8, label="U280 HBM 8 GiB")
    a2.axhline(d["ddr4_capacity_GiB"].iloc[0], color="C1", lw=0.8, label="U280 DDR4 32 GiB")
    a2.set_xlabel("video frames (256 tokens each)")
    a2.set_ylabel("GiB held at the end of the decode")
    a2.set_title("(c) memory need per group (int4 weights and KV, fp16 replay cache)")
    a2.set_xticks(sorted(data[FRAMES].unique()))
    a2.grid(True, alpha=0.3)
    a2.legend(fontsize=7)
    save(fig, data, out, "dse_long_video")


# ---------------------------------------------------------------------------------------------------
# (d) DRS
# ---------------------------------------------------------------------------------------------------


def scheduler_name(text: str) -> str:
    s = json.loads(text)
    return s.get("dispatch", "round_robin") if s.get("drs", True) else "off"


def drs(runs: Path, out: Path) -> None:
    df = results(runs, "dse_drs")
    df["scheduler"] = df["scheduler"].map(scheduler_name)
    df["batch"] = 2 * df[PROMPTS]
    keys = [CORES, "batch", RATIO]
    off = df[df["scheduler"] == "off"].set_index(keys)["latency_s"].rename("off_latency_s")
    df = df.join(off, on=keys)
    df["latency_vs_drs_off_pct"] = 100 * (df["latency_s"] / df["off_latency_s"] - 1)
    order = {s: i for i, s in enumerate(SCHEDULERS)}
    df = df.sort_values([*keys, "scheduler"], key=lambda c: c.map(order) if c.name == "scheduler" else c)
    cols = [*keys, "scheduler", "latency_s", "dense_latency_s", "speedup_vs_dense", "latency_vs_drs_off_pct"]
    data = df[cols + ["core_utilization", "tokens_per_s", "luts", "fits_board"]].reset_index(drop=True)

    groups = data[keys].drop_duplicates().reset_index(drop=True)
    labels = [f"{int(c)} cores\nB={int(b)}\n{r:.0%}" for c, b, r in groups.itertuples(index=False)]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    width = 0.27
    for i, (sched, color) in enumerate(zip(SCHEDULERS, ("0.6", "C0", "C2"), strict=True)):
        d = groups.merge(data[data["scheduler"] == sched], on=keys)
        xs = [j + (i - 1) * width for j in range(len(groups))]
        a2.bar(xs, d["speedup_vs_dense"], width, color=color, label=f"DRS {sched}" if i else "DRS off")
        if sched != "off":
            a1.bar(xs, d["latency_vs_drs_off_pct"], width, color=color, label=f"DRS on, {sched}")
    a1.axhline(0, color="k", lw=0.8)
    a1.set_ylabel("latency vs DRS off (%)\n(below 0: DRS faster)")
    a1.set_title("(d) DRS and its dispatch rule (instruction-level machine, 2 of 32 layers)")
    a1.grid(True, axis="y", alpha=0.3)
    a1.legend(fontsize=8)
    a2.set_ylabel("speedup vs dense (x)")
    a2.set_ylim(1.0, None)
    a2.set_xticks(range(len(groups)))
    a2.set_xticklabels(labels, fontsize=8)
    a2.grid(True, axis="y", alpha=0.3)
    a2.legend(fontsize=8, ncol=3)
    save(fig, data, out, "dse_drs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "sweeps", help="folder of the sweep outputs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures", help="where the figures go")
    studies = {"a": u280_best, "b": bandwidth, "c": long_video, "d": drs}
    ap.add_argument("--only", nargs="+", choices=sorted(studies), help="draw only these studies' figures")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or sorted(studies):
        studies[name](args.runs, args.out)


if __name__ == "__main__":
    main()
