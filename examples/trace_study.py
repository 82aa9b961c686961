"""How much the trace decides (docs/trace_study.md): one machine, traces from different sources.

    python examples/trace_study.py            # -> docs/figures/trace_study.csv and a markdown table

Every case runs the U280 preset with the event model (phase granularity) at one replay budget (TAS at
``policy.target_replay_ratio``, re-decided from each trace's own TAS), with DRS on and off. Group A is the
paper workload (VILA-U 7B dims) on the synthetic generator and on each shipped model's capture
transferred to those dims; group B is each shipped model at its own dims on its direct capture and on
the synthetic generator at the same dims. Besides the simulator's numbers it counts, from the replay
decisions, what DRS has to work with (docs/trace_study.md defines each column).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from accelerator.cost import drs_core_counts, static_core_counts  # noqa: E402
from cosim.api import load, run  # noqa: E402

PAPER = ROOT / "workloads" / "fastcar_vilau7b_u280.yaml"
TRACES = ROOT / "workloads" / "traces"

#: Prompts (batch = 2 x prompts with CFG) group A runs at; group B runs the captures' 5.
PROMPTS = (3, 5, 6)
#: (group, case, workload file, overrides).
CASES = [
    ("A: VILA-U 7B dims", "synthetic", PAPER, {}),
    ("A: VILA-U 7B dims", "transferred from fastcar-tiny", PAPER,
     {"trace.source": "transfer", "trace.path": str(TRACES / "fastcar_tiny_b10.parquet")}),
    ("A: VILA-U 7B dims", "transferred from fastcar-footage", PAPER,
     {"trace.source": "transfer", "trace.path": str(TRACES / "fastcar_footage_b10.parquet")}),
    ("B: fastcar-tiny dims", "direct capture", PAPER,
     {"model.preset": "fastcar-tiny", "video.tokens_per_frame": 64, "trace.source": "file",
      "trace.path": str(TRACES / "fastcar_tiny_b10.parquet")}),
    ("B: fastcar-tiny dims", "synthetic", PAPER, {"model.preset": "fastcar-tiny", "video.tokens_per_frame": 64}),
    ("B: fastcar-footage dims", "direct capture", PAPER,
     {"model.preset": "fastcar-footage", "video.tokens_per_frame": 64, "trace.source": "file",
      "trace.path": str(TRACES / "fastcar_footage_b10.parquet")}),
    ("B: fastcar-footage dims", "synthetic", PAPER,
     {"model.preset": "fastcar-footage", "video.tokens_per_frame": 64}),
]  # fmt: skip


def decision_stats(replay: np.ndarray, tokens_per_frame: int, cores: int) -> dict:
    """What DRS has to rebalance, from the (batch, layers, steps) replay cube over frames 1..."""
    later = replay[:, :, tokens_per_frame:]
    computing = ~later
    static = static_core_counts(computing, cores)  # (cores, layers, steps)
    drs = drs_core_counts(computing, cores)
    per_layer = later.mean(axis=(0, 2))
    half = later.shape[0] // 2
    return {
        "replay_frames_1_on": float(later.mean()),
        "per_layer_replay_spread": float(per_layer.std()),
        "all_replay_share": float(later.all(axis=0).mean()),
        "cfg_pair_agreement": float((later[:half] == later[half:]).mean()) if half else float("nan"),
        "static_over_drs_busiest": float(static.max(axis=0).sum() / max(drs.max(axis=0).sum(), 1)),
    }


def measure(group: str, case: str, path: Path, overrides: dict, ratio: float) -> dict:
    sets = {"policy.kind": "tas", "policy.target_replay_ratio": ratio, "outputs.report": False} | overrides
    row = {"group": group, "case": case, "batch": 2 * sets["video.prompts"]}
    for drs in (True, False):
        w = load(path, sets | {"scheduler.drs": drs})
        t0 = time.perf_counter()
        res = run(w)
        s = res.summary
        key = "on" if drs else "off"
        row[f"latency_s_drs_{key}"] = s["latency_s"]
        row[f"mlp_s_drs_{key}"] = s["breakdown_s"]["mlp"]
        if drs:
            row["drs_s"] = s["breakdown_s"]["drs"]
        row[f"seconds_drs_{key}"] = round(time.perf_counter() - t0, 1)
        if drs:
            row |= {"dense_latency_s": s["dense_latency_s"], "replay_ratio": s["replay_ratio"]}
            tr = res.trace
            row |= decision_stats(tr.replay_cube(), tr.meta.tokens_per_frame, w.hardware.cores)
    row["speedup"] = row["dense_latency_s"] / row["latency_s_drs_on"]
    row["drs_gain"] = row["latency_s_drs_off"] / row["latency_s_drs_on"] - 1
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.5, help="policy.target_replay_ratio of every case")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "trace_study.csv")
    a = ap.parse_args(argv)
    rows = []
    for group, case, path, overrides in CASES:
        if "trace.path" in overrides and not Path(overrides["trace.path"]).is_file():
            print(f"skipped {case}: no {overrides['trace.path']}", file=sys.stderr)
            continue
        # group A also at other batches: which entries share a core depends on the batch (docs/trace_study.md)
        for prompts in PROMPTS if group.startswith("A") else (5,):
            rows.append(measure(group, case, path, overrides | {"video.prompts": prompts}, a.ratio))
            print(
                f"{group} / {case} / {prompts} prompts: {rows[-1]['latency_s_drs_on']:.2f} s", file=sys.stderr
            )
    df = pd.DataFrame(rows)
    df.to_csv(a.out, index=False, float_format="%.6g")
    cols = ["group", "case", "batch", "replay_ratio", "latency_s_drs_on", "speedup", "drs_gain", "mlp_s_drs_off",
            "mlp_s_drs_on", "drs_s", "static_over_drs_busiest", "all_replay_share", "per_layer_replay_spread",
            "cfg_pair_agreement"]  # fmt: skip
    print(markdown(df[cols]))


def markdown(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
