"""Units and definitions of the keys of a capture's quality (``summary["quality"]``, ``quality.json``).

One source for the report's quality table; docs/metrics.md gives the same definitions in prose, and a test
checks that every key a capture writes is defined here. Kept free of torch so a report can import it.
"""

from __future__ import annotations

#: key -> (unit, definition). Every comparison is against the dense decode of the same prompts with the
#: same seed and sampling noise.
QUALITY_KEYS: dict[str, tuple[str, str]] = {
    "psnr_db": ("dB", "PSNR of the replaying decode's frames 1.. vs dense (100 = identical)"),
    "ssim": ("1", "mean SSIM per (prompt, frame) of frames 1.. vs dense"),
    "psnr_db_all_frames": ("dB", "PSNR over all frames, frame 0 (identical by construction) included"),
    "ssim_all_frames": ("1", "mean SSIM over all frames, frame 0 included"),
    "token_agreement": ("1", "share of sampled visual tokens equal to dense (all frames)"),
    "forced_psnr_db": ("dB", "PSNR of frames 1.. of the teacher-forced pass (fed the dense video: no drift)"),
    "forced_ssim": ("1", "mean SSIM of frames 1.. of the teacher-forced pass"),
    "forced_psnr_db_all_frames": ("dB", "teacher-forced PSNR over all frames"),
    "forced_ssim_all_frames": ("1", "teacher-forced mean SSIM over all frames"),
    "forced_token_agreement": ("1", "teacher-forced share of tokens equal to dense"),
    "baseline_frozen_psnr_db": (
        "dB",
        "no model: dense frame 0 shown for every later frame, vs dense frames 1..",
    ),
    "baseline_frozen_ssim": ("1", "the same baseline's mean SSIM"),
    "baseline_copy_previous_psnr_db": ("dB", "each dense frame shown one frame late, vs dense frames 1.."),
    "baseline_copy_previous_ssim": ("1", "the same baseline's mean SSIM"),
    "mlp_rel_error": ("1", "mean ||cached - true|| / ||true|| of the MLP output over replayed entries"),
    "replay_ratio": ("1", "replayed MLPs / (layers x decode steps x batch) of the replaying decode"),
    "tau": ("logit", "the TAS threshold used (policy tas)"),
    "threshold": ("-", "the policy's threshold or interval"),
    "tau_source": (
        "",
        "how tau was set: given, calibrated (on the dense run's TAS, for a replay target) or closed_loop "
        "(re-chosen on the replaying run's own TAS until it replays the target)",
    ),
    "tau_decodes": ("1", "replaying decodes tau's choice took (1 unless closed_loop)"),
    "policy": ("", "the replay policy that decoded"),
    "seed": ("1", "the sampling seed of the headline values and of the trace"),
    "mlp_rows": ("1", "MLP row evaluations the replaying decode performed"),
    "mlp_rows_dense": ("1", "MLP row evaluations of the dense decode"),
    "mlp_rows_error_pass": ("1", "MLP row evaluations of the teacher-forced pass"),
    "reference": ("", "what dense means here"),
    "checkpoint": ("", "the checkpoint that decoded"),
    "quality_seeds": ("1", "sampling seeds the capture ran at (seed .. seed + k - 1)"),
    "seeds": ("1", "those seeds"),
}

#: Suffixes a capture at several seeds adds to a metric: its mean and sample std (ddof 1) over the seeds.
SPREAD_SUFFIXES = {"_mean": "mean over the seeds of", "_std": "sample standard deviation over the seeds of"}


def quality_definition(key: str) -> tuple[str, str] | None:
    """(unit, definition) of a quality key, ``<metric>_mean`` and ``<metric>_std`` included; None if unknown."""
    if key in QUALITY_KEYS:
        return QUALITY_KEYS[key]
    for suffix, what in SPREAD_SUFFIXES.items():
        base = key.removesuffix(suffix)
        if base != key and base in QUALITY_KEYS:
            unit, _ = QUALITY_KEYS[base]
            return unit, f"{what} {base}"
    return None
