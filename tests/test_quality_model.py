"""Quality estimates for sweeps: the shipped table, its interpolation, and that a capture measures it."""

from __future__ import annotations

import csv
from importlib.resources import files

import numpy as np
import pytest

from cosim.config import POLICIES
from cosim.quality_model import KEYS, estimate, known_policies, provenance, table
from models.capture import PSNR_IDENTICAL_DB


def _curve(policy: str) -> list[dict]:
    rows = [r for r in table() if r["policy"] == policy]
    return sorted(rows, key=lambda r: float(r["replay_ratio_mean"]))


def test_table_covers_every_workload_policy():
    assert set(known_policies()) == set(POLICIES)


def test_estimate_at_table_points_returns_the_table_means():
    for r in table():
        got = estimate(r["policy"], float(r["replay_ratio_mean"]))
        for key, col in KEYS.items():
            assert got[key] == pytest.approx(float(r[f"{col}_mean"]), rel=1e-12), (r["policy"], key)
        assert got["quality_extrapolated"] is False


def test_between_points_lies_between_neighbours():
    for policy in known_policies():
        pts = _curve("dense") + _curve(policy) if policy != "dense" else _curve("dense")
        for a, b in zip(pts, pts[1:], strict=False):
            xa, xb = float(a["replay_ratio_mean"]), float(b["replay_ratio_mean"])
            got = estimate(policy, 0.3 * xa + 0.7 * xb)
            for key, col in KEYS.items():
                ya, yb = float(a[f"{col}_mean"]), float(b[f"{col}_mean"])
                assert min(ya, yb) - 1e-12 <= got[key] <= max(ya, yb) + 1e-12, (policy, xa, xb, key)


def test_dense_is_ratio_zero_and_identical():
    want = {
        "quality_psnr_db": PSNR_IDENTICAL_DB,
        "quality_ssim": 1.0,
        "quality_forced_psnr_db": PSNR_IDENTICAL_DB,
        "quality_forced_ssim": 1.0,
        "quality_extrapolated": False,
    }
    assert estimate("dense", 0.0) == want
    assert estimate("dense", 0.5) == want  # dense replays nothing, whatever ratio is passed
    assert estimate("tas", 0.0) == want


def test_beyond_the_measured_range_clamps_and_says_so():
    last = _curve("tas")[-1]
    got = estimate("tas", 0.95)
    assert got["quality_extrapolated"] is True
    assert got["quality_psnr_db"] == pytest.approx(float(last["psnr_db_mean"]))
    assert got["quality_forced_ssim"] == pytest.approx(float(last["forced_ssim_mean"]))


def test_unknown_policy_and_bad_ratio_are_rejected():
    with pytest.raises(ValueError, match=r"unknown policy 'teacache'.*known: .*tas.*oracle"):
        estimate("teacache", 0.5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="replay_ratio"):
            estimate("tas", bad)


def test_provenance_matches_the_shipped_checkpoint():
    from models.checkpoint import DEFAULT_CHECKPOINT, tokenizer_path
    from models.quality_table import sha256_file

    meta = provenance()
    assert meta["checkpoint_sha256"] == sha256_file(DEFAULT_CHECKPOINT)
    assert meta["tokenizer_sha256"] == sha256_file(tokenizer_path(DEFAULT_CHECKPOINT))
    assert meta["psnr_identical_db"] == PSNR_IDENTICAL_DB


def _runs() -> list[dict]:
    return list(
        csv.DictReader(files("cosim").joinpath("data", "quality_tiny_runs.csv").read_text().splitlines())
    )


def test_summary_is_the_mean_and_std_of_the_runs():
    runs = _runs()
    for r in table():
        group = [
            x
            for x in runs
            if (x["policy"], x["target_replay_ratio"]) == (r["policy"], r["target_replay_ratio"])
        ]
        assert int(r["seeds"]) == len(group) == len(provenance()["seeds"])
        for col in ("replay_ratio", *KEYS.values()):
            v = np.array([float(x[col]) for x in group])
            assert float(r[f"{col}_mean"]) == pytest.approx(v.mean(), rel=1e-5, abs=1e-9)
            assert float(r[f"{col}_std"]) == pytest.approx(v.std(ddof=1), rel=1e-5, abs=1e-6)


@pytest.mark.usefixtures("single_torch_thread")
def test_a_table_run_is_what_a_fresh_capture_measures():
    """One run of the table re-captured at the same settings and seed (about 7 s): the capture is
    deterministic per seed, so the shipped numbers must come back to the digits stored."""
    from models.capture import capture
    from models.quality_table import run_settings

    meta = provenance()
    row = next(r for r in _runs() if r["policy"] == "tas" and float(r["target_replay_ratio"]) == 0.5)
    settings = run_settings(
        meta["prompts"], int(row["seed"]), "tas", 0.5, meta["capture_settings"]["threads"]
    )
    q = capture(settings, progress=False).quality
    for col in ("replay_ratio", "psnr_db", "ssim", "token_agreement", "forced_psnr_db", "forced_ssim"):
        assert q[col] == pytest.approx(float(row[col]), rel=1e-8), col
    # tau is a float32 TAS value, whose last bits depend on the CPU's matmul kernels (7.2373776 on an AMD
    # EPYC against the stored 7.2373791): same decisions, so every number above is identical
    assert q["tau"] == pytest.approx(float(row["tau"]), rel=1e-6)
