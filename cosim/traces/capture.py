"""Trace source ``capture``: run the PyTorch model live with the workload's policy.

The workload's model and video shape must be the checkpoint's (a trace from one model says nothing exact
about another; ``trace.source: transfer`` maps a capture onto other dims). A Hugging Face checkpoint
(a directory with ``config.json``, or one ``.safetensors`` file with ``config.json`` beside it) has no
video layout: it is decoded with the workload's ``video.frames`` and ``video.tokens_per_frame``, and its
``config.json`` dims are checked against the workload's ``model`` section (docs/capture.md).

torch and the model code load only when a function here runs (:mod:`models.capture` is imported inside
them), so importing this module, or :mod:`cosim.traces`, stays light.
"""

from __future__ import annotations

from pathlib import Path

from cosim.config import Workload, WorkloadError
from cosim.jsonio import dumps
from cosim.traces.bundle import TraceBundle
from cosim.traces.schema import write_trace


def capture_settings(w: Workload):
    from models.capture import CaptureSettings

    p, v, t, sa = w.policy, w.video, w.trace, w.sparse_attention
    threshold = float(p.interval) if p.kind == "fixed_interval" else p.threshold
    return CaptureSettings(
        checkpoint=t.checkpoint,
        frames=v.frames,
        tokens_per_frame=v.tokens_per_frame,
        prompts=list(t.classes) if t.classes else v.prompts,
        cfg=v.cfg,
        cfg_scale=v.cfg_scale,
        policy=p.kind,
        threshold=threshold,
        target_replay_ratio=p.target_replay_ratio,
        tau_calibration=p.tau_calibration,
        query_pre_rope=p.query_pre_rope,
        strict=p.strict,
        staleness_cap=p.staleness_cap,
        no_twice_in_row=p.no_twice_in_row,
        cfg_coherent=p.cfg_coherent,
        sparse_sink_tokens=sa.sink_tokens if sa.window else 0,
        sparse_window=sa.window,
        seed=w.seed,
        quality_seeds=t.quality_seeds,
    )


def _check_hf_dims(w: Workload, hf) -> None:
    """The workload's model section against a Hugging Face config.json, field by field (before any weight
    is read): the simulator costs the dims the workload states, so they must be the checkpoint's."""
    m, d = w.model, hf.dims
    pairs = [
        ("model.layers", "num_hidden_layers", m.layers, d.layers),
        ("model.hidden", "hidden_size", m.hidden, d.hidden),
        ("model.heads", "num_attention_heads", m.heads, d.heads),
        ("model.kv_heads", "num_key_value_heads", m.kv_heads, d.kv_heads),
        ("model.head_dim", "head_dim", m.head_dim, d.head_dim),
        ("model.mlp_hidden", "intermediate_size", m.mlp_hidden, d.mlp_hidden),
        ("model.vocab", "vocab_size", m.vocab, d.vocab),
        ("model.mlp_kind", "hidden_act", m.mlp_kind, "swiglu"),
    ]
    for key, field, have, need in pairs:
        if have != need:
            shown_need = "silu (a SwiGLU MLP)" if field == "hidden_act" else need
            raise WorkloadError(
                f"{key}: {have} does not match the checkpoint's {field} = {shown_need} in {hf.file}"
            )


def check_checkpoint(w: Workload) -> None:
    """Fail before decoding anything if the workload does not describe the checkpoint, or if the checkpoint
    (or its tokenizer) is unusable: missing, truncated, corrupt, inconsistent with its own config."""
    from models.capture import hf_num_classes, load_model
    from models.checkpoint import CheckpointError, is_hf_checkpoint, read_hf_config

    s = capture_settings(w)
    try:
        if s.checkpoint is not None and is_hf_checkpoint(s.checkpoint):
            _check_hf_dims(w, read_hf_config(s.checkpoint))
            load_model(
                s.checkpoint,
                frames=s.frames,
                tokens_per_frame=s.tokens_per_frame,
                num_classes=hf_num_classes(s),
            )
            return
        model, _, _, name = load_model(w.trace.checkpoint)
    except CheckpointError as exc:
        raise type(exc)(f"trace.checkpoint: {exc}") from None
    cfg = model.cfg
    wanted = {
        "model.layers": (w.model.layers, cfg.dims.layers),
        "model.hidden": (w.model.hidden, cfg.dims.hidden),
        "model.heads": (w.model.heads, cfg.dims.heads),
        "model.mlp_hidden": (w.model.mlp_hidden, cfg.dims.mlp_hidden),
        "video.tokens_per_frame": (w.video.tokens_per_frame, cfg.tokens_per_frame),
    }
    for key, (have, need) in wanted.items():
        if have != need:
            raise WorkloadError(
                f"{key}: {have} does not match the checkpoint {name} ({need}); use its preset"
            )
    if w.video.frames > cfg.frames:
        raise WorkloadError(
            f"video.frames: {w.video.frames} exceeds the {cfg.frames} frames {name} was trained on"
        )
    if w.trace.classes and len(w.trace.classes) != w.video.prompts:
        raise WorkloadError(f"trace.classes: {len(w.trace.classes)} classes for {w.video.prompts} prompts")


def capture_bundle(w: Workload, progress: bool = False) -> TraceBundle:
    from models.capture import capture

    check_checkpoint(w)
    try:
        result = capture(capture_settings(w), progress=progress)
    except ValueError as exc:  # settings the model side rejects (e.g. class ids out of range)
        raise WorkloadError(f"trace: {exc}") from None
    png = frames_png(result.videos["dense"][0], result.videos["replay"][0]) if result.videos else None
    return TraceBundle(result.trace, result.trace.meta.threshold, dict(result.quality), png)


#: Pixels per frame pixel in frames.png (the shipped models decode 32 x 32 frames) and between frames.
FRAME_SCALE, FRAME_GAP = 3, 4


def frames_png(dense, replay) -> bytes:
    """One prompt's decoded frames as a PNG strip: the dense decode's frames left to right in the top row,
    the replaying decode's below (``dense``, ``replay``: (T, H, W, 3) in [0, 1]), white gaps between."""
    import numpy as np

    rows = []
    for video in (dense, replay):
        px = np.clip(np.round(np.asarray(video) * 255), 0, 255).astype(np.uint8)
        px = px.repeat(FRAME_SCALE, axis=1).repeat(FRAME_SCALE, axis=2)
        t, h, _, _ = px.shape
        gap = np.full((h, FRAME_GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([x for f in px for x in (f, gap)][:-1], axis=1))
    band = np.full((FRAME_GAP, rows[0].shape[1], 3), 255, np.uint8)
    return png_bytes(np.concatenate([rows[0], band, rows[1]], axis=0))


def png_bytes(rgb) -> bytes:
    """A (H, W, 3) uint8 image as PNG (8-bit RGB, no filter): deterministic bytes, no imaging library."""
    import struct
    import zlib

    import numpy as np

    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def fill_capture(bundle: TraceBundle, d: Path) -> None:
    """Write a capture directory's files into ``d`` (a staging directory, see :mod:`cosim.outdir`)."""
    from cosim.provenance import provenance

    write_trace(bundle.trace, d / "trace.parquet")
    (d / "quality.json").write_text(dumps(bundle.quality))
    (d / "provenance.json").write_text(dumps(provenance()))
