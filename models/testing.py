"""Tiny models and checkpoints for tests: random but seeded weights, shapes small enough for milliseconds."""

from __future__ import annotations

from pathlib import Path

import torch

from models.checkpoint import save_hf_llama, save_tokenizer, tokenizer_path
from models.data import VideoSpec, make_dataset
from models.dims import ModelDims
from models.tokenizer import PatchVQ
from models.transformer import ARConfig, ARVideoTransformer


def tiny_config(
    layers: int = 2,
    frames: int = 3,
    tokens_per_frame: int = 4,
    codebook: int = 16,
    class_embedding: bool = False,
) -> ARConfig:
    classes = 3
    dims = ModelDims(
        name="test-tiny",
        layers=layers,
        hidden=32,
        heads=4,
        kv_heads=2,
        mlp_hidden=64,
        vocab=codebook + classes + 1,
    )
    return ARConfig(
        dims,
        codebook,
        classes,
        frames=frames,
        tokens_per_frame=tokens_per_frame,
        class_embedding=class_embedding,
    )


def tiny_model(seed: int = 0, **kwargs: int | bool) -> ARVideoTransformer:
    torch.manual_seed(seed)
    model = ARVideoTransformer(tiny_config(**kwargs))
    with torch.no_grad():  # larger weights than the init so TAS values spread and decisions vary
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model.eval()


def tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer in the shipped layout (4 frames of 16x16 px = 4x4 tokens)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(frames=4, size=16, object_size=4, speed=1)
    videos, _ = make_dataset(16, seed=seed, spec=spec)
    vq = PatchVQ.fit(videos, patch=4, size=16, seed=seed, iters=5)
    model = tiny_model(seed, frames=4, tokens_per_frame=16, codebook=16, class_embedding=True)
    path = directory / "tiny.safetensors"
    save_hf_llama(model, path)
    save_tokenizer(vq, tokenizer_path(path))
    return path
