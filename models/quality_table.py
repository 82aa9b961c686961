"""Quality vs replay ratio for every replay policy, measured on the shipped checkpoint (for sweeps).

    python -m models.quality_table --jobs 2    # -> cosim/data/quality_tiny*; 8 prompts, seeds 0 1 2

Design-space sweeps need quality as an objective but cannot afford a live capture per point, so this
measures it once: every policy the workload's ``policy.kind`` accepts, at target replay ratios
0.05, 0.1 ... 0.8 and 0.875 (= (T-1)/T, the most any policy can replay: frame 0 never replays), over a
few sampling seeds. Each run goes through the capture code (:class:`models.capture._Session`, as
``models.figures`` does), so the numbers mean what ``quality.json`` of a capture means.

Writes three files next to ``--out``: the per-(policy, target) means and standard deviations over seeds
(``quality_tiny.csv``), every single run (``quality_tiny_runs.csv``, what the means come from and what
the tests re-capture) and the provenance (``quality_tiny.json``: command, checkpoint sha256, settings,
date). :mod:`cosim.quality_model` interpolates the means.

Target 0 is not run per policy: a zero budget replays nothing and decodes exactly the dense video
(checked for all six policies at seed 1, 8 prompts), so the ratio-0 point is the dense reference itself,
one row per seed under policy ``dense`` (PSNR of identical videos is the capture's cap, 100 dB; SSIM 1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from models.capture import PSNR_IDENTICAL_DB, QUALITY_COLUMNS, CaptureSettings, _Session
from models.checkpoint import DEFAULT_CHECKPOINT, tokenizer_path

#: The policies of ``cosim.config.PolicySection.kind`` that replay (``dense`` is the ratio-0 row).
POLICIES = ("tas", "topk", "fixed_interval", "random", "input_similarity", "oracle")
TARGETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.875)
SEEDS = (0, 1, 2)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "cosim" / "data" / "quality_tiny.csv"
RUN_COLUMNS = ("policy", "target_replay_ratio", "seed", *QUALITY_COLUMNS, "tau")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_settings(prompts: int, seed: int, policy: str, target: float | None, threads: int) -> CaptureSettings:
    """The capture settings of one table run (the tests rebuild a row's run from these)."""
    return CaptureSettings(
        prompts=prompts, seed=seed, policy=policy, target_replay_ratio=target, threads=threads
    )


def measure(
    seed: int,
    policies: list[str],
    targets: list[float],
    prompts: int,
    threads: int,
    with_dense: bool,
    progress=None,
) -> list[dict]:
    """Runs of one seed, sharing one dense reference (decoded once per call)."""
    rows = []
    with _Session(run_settings(prompts, seed, "dense", None, threads)) as session:
        jobs = [("dense", 0.0)] if with_dense else []
        jobs += [(p, t) for p in policies for t in targets]
        for policy, target in jobs:
            s = run_settings(prompts, seed, policy, None if policy == "dense" else target, threads)
            q = session.run(s, keep_videos=False).quality
            rows.append(
                {
                    "policy": policy,
                    "target_replay_ratio": target,
                    "seed": seed,
                    **{k: q[k] for k in QUALITY_COLUMNS},
                    "tau": q["tau"],
                }
            )
            if progress is not None:
                progress()
    return rows


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; 0 for one seed) over seeds per (policy, target); PSNR averaged in dB."""
    g = runs.groupby(["policy", "target_replay_ratio"], sort=False)
    out = g.size().rename("seeds").to_frame()
    for m in QUALITY_COLUMNS:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    out["tau_mean"] = g["tau"].mean()
    return out.reset_index()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="summary CSV (runs CSV and JSON beside it)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per run (class i %% 8), CFG doubles them")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one seed x policy each)")
    a = ap.parse_args(argv)
    if any(not 0 < t <= 7 / 8 for t in a.targets):
        ap.error("targets must be in (0, 0.875]: 0 is the dense row, 7/8 the most that can replay")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    total = len(a.seeds) * (1 + len(a.policies) * len(a.targets))
    rows: list[dict] = []
    with tqdm(total=total, desc="quality runs", unit="run") as bar:
        if a.jobs <= 1:
            for seed in a.seeds:
                rows += measure(seed, a.policies, a.targets, a.prompts, a.threads, True, lambda: bar.update())
        else:
            # one task per (seed, policy): each decodes its own dense reference (deterministic per seed)
            with ProcessPoolExecutor(a.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futs = {
                    pool.submit(measure, seed, [p], a.targets, a.prompts, a.threads, i == 0): None
                    for seed in a.seeds
                    for i, p in enumerate(a.policies)
                }
                for fut in as_completed(futs):
                    got = fut.result()
                    rows += got
                    bar.update(len(got))
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    order = {p: i for i, p in enumerate(("dense", *POLICIES))}
    runs = runs.sort_values(
        ["policy", "target_replay_ratio", "seed"], key=lambda c: c.map(order) if c.name == "policy" else c
    ).reset_index(drop=True)
    summary = summarise(runs)
    seconds = time.perf_counter() - t0

    a.out.parent.mkdir(parents=True, exist_ok=True)
    runs_path = a.out.with_name(a.out.stem + "_runs.csv")
    meta_path = a.out.with_suffix(".json")
    summary.to_csv(a.out, index=False, float_format="%.6g")
    runs.to_csv(runs_path, index=False, float_format="%.10g")
    tok = tokenizer_path(DEFAULT_CHECKPOINT)
    meta = {
        "what": "measured quality vs the dense decode of the shipped fastcar-tiny checkpoint (32x32 RGB, "
        "8 frames x 8x8 tokens), per replay policy and target replay ratio; estimates for sweeps, "
        "not VILA-U numbers",
        "command": "python -m models.quality_table " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_seconds": round(seconds, 1),
        "checkpoint": DEFAULT_CHECKPOINT.name,
        "checkpoint_sha256": sha256_file(DEFAULT_CHECKPOINT),
        "tokenizer": tok.name,
        "tokenizer_sha256": sha256_file(tok),
        "torch": torch.__version__,
        "seeds": a.seeds,
        "prompts": a.prompts,
        "policies": a.policies,
        "targets": a.targets,
        "capture_settings": asdict(run_settings(a.prompts, a.seeds[0], "tas", a.targets[0], a.threads))
        | {"seed": "per run", "policy": "per run", "target_replay_ratio": "per run"},
        "ratio_zero": "policy dense, one run per seed: a zero budget replays nothing, so every policy's "
        "ratio-0 point is the dense decode itself",
        "psnr_identical_db": PSNR_IDENTICAL_DB,
        "aggregation": "mean and sample std (ddof=1) over seeds of each run's metrics; PSNR averaged in dB; "
        "replay_ratio is the achieved ratio (tas is calibrated on the dense run's TAS and lands below "
        "its target)",
        "files": {"summary": a.out.name, "runs": runs_path.name},
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"quality_table: {len(runs)} runs in {seconds:.0f}s -> {a.out}, {runs_path.name}, {meta_path.name}")


if __name__ == "__main__":
    main()
