"""The shipped footage model: it loads, beats copy-previous-frame on held-out footage, and drives the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from cosim.traces import read_trace
from models import footage
from models.checkpoint import CHECKPOINT_DIR, load_checkpoint
from models.fsq import FSQTokenizer

CKPT = CHECKPOINT_DIR / "fastcar_footage.safetensors"
pytestmark = [
    pytest.mark.usefixtures("single_torch_thread"),
    pytest.mark.skipif(not CKPT.is_file(), reason="footage checkpoint missing"),
]


def test_checkpoint_loads_with_its_fsq_tokenizer():
    model, tok, info = load_checkpoint(CKPT)
    cfg = model.config
    assert isinstance(tok, FSQTokenizer) and tok.size == cfg.codebook_size == 1000
    assert (cfg.dims.layers, cfg.dims.hidden, cfg.num_classes) == (8, 192, 3)
    assert (cfg.frames, cfg.tokens_per_frame) == (8, 64)
    assert info["heldout"]["videos"] == 384 and info["steps"] == 700  # the second phase (model card)


@pytest.mark.skipif(footage.available() is not None, reason=str(footage.available()))
@pytest.mark.xfail(
    strict=True,
    reason="the shipped footage model does NOT beat copy-previous-frame: 66.76% vs 67.52% token accuracy and "
    "28.61 vs 28.75 dB on 384 held-out videos (docs/model_card_footage.md); strict, so a checkpoint that "
    "does beat it turns this into a failure until the mark is removed",
)
def test_beats_copy_previous_frame_on_fresh_heldout_videos():
    """Recomputed here on held-out videos the training run never drew (another seed), not read from the log:
    teacher-forced next-frame token accuracy and decoded-frame PSNR beat copying the previous frame."""
    from models.train_footage import evaluate

    model, tok, _ = load_checkpoint(CKPT)
    videos, labels = footage.make_footage(12, seed=777, split="heldout")
    m = evaluate(model, tok, videos, labels)
    assert m["next_frame_token_accuracy"] > m["copy_previous_frame_accuracy"] + 0.02, m
    assert m["next_frame_psnr_db"] > m["copy_previous_frame_psnr_db"], m


@pytest.mark.skipif(footage.available() is not None, reason=str(footage.available()))
def test_beats_copy_previous_frame_in_likelihood_on_fresh_heldout_videos():
    """Where copying and the model do differ: as distributions over the next token. Copy is given its best
    confidence in hindsight; an untrained model scores ln(1000) = 6.9 nats, copy about 2.9 (model card)."""
    from models.train_footage import evaluate

    model, tok, _ = load_checkpoint(CKPT)
    videos, labels = footage.make_footage(12, seed=777, split="heldout")
    m = evaluate(model, tok, videos, labels)
    assert m["next_frame_nll_nats"] < m["copy_previous_frame_nll_nats"] - 0.5, m


def test_cli_capture_and_run_of_the_footage_workload(tmp_path):
    from cosim.config import WORKLOADS_DIR

    raw = yaml.safe_load((WORKLOADS_DIR / "capture_footage.yaml").read_text())
    raw["trace"]["checkpoint"] = str(CKPT)
    raw["video"].update(frames=3, prompts=1)
    raw["trace"]["classes"] = [1]
    raw["outputs"] = {"report": False, "timeline_steps": 1}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(raw))
    for command in ("capture", "run"):
        r = subprocess.run(
            [sys.executable, "-m", "cosim", command, str(path), "--out", str(tmp_path / command)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trace_label"] == f"captured from {CKPT.name}"
    for d in ("capture", "run"):
        trace = read_trace(tmp_path / d / "trace.parquet")
        assert trace.meta.source == "captured" and trace.meta.layers == 8 and trace.meta.batch == 2
        assert (trace.meta.frames, trace.meta.tokens_per_frame) == (3, 64)
        dims = {k: trace.meta.model[k] for k in ("name", "layers", "hidden", "heads", "mlp_hidden", "vocab")}
        assert dims == {
            "name": "fastcar-footage",
            "layers": 8,
            "hidden": 192,
            "heads": 6,
            "mlp_hidden": 512,
            "vocab": 1004,
        }
    quality = json.loads((tmp_path / "capture" / "quality.json").read_text())
    assert quality["psnr_db"] is not None  # decoded through the FSQ tokenizer


def test_shipped_workload_validates():
    from cosim.config import WORKLOADS_DIR

    r = subprocess.run(
        [sys.executable, "-m", "cosim", "validate", str(WORKLOADS_DIR / "capture_footage.yaml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
