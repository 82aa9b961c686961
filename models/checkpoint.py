"""Checkpoints: the shipped tiny model and Hugging Face Llama safetensors.

The transformer is stored with HF Llama key names (``model.layers.{i}.self_attn.q_proj.weight``, ...), so
the shipped checkpoint and a real Llama-family checkpoint go through the same loader. Our config (token
layout, classes, frames) rides in the safetensors header metadata; the tokenizer's codebook is a separate
small file next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.dims import ModelDims
from models.tokenizer import PatchVQ
from models.transformer import ARConfig, ARVideoTransformer

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "fastcar_tiny.safetensors"
#: Our one non-Llama tensor (optional): the per-position class vector.
CLASS_EMBED_KEY = "fastcar.class_embed.weight"


def hf_key_map(layers: int) -> list[str]:
    """Every key a HF ``LlamaForCausalLM`` state dict has (besides rotary buffers)."""
    keys = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(layers):
        pre = f"model.layers.{i}."
        keys += [
            pre + "input_layernorm.weight",
            pre + "post_attention_layernorm.weight",
            *(pre + f"self_attn.{m}_proj.weight" for m in "qkvo"),
            *(pre + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")),
        ]
    return keys


def save_hf_llama(
    model: ARVideoTransformer, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write the transformer as HF-keyed safetensors (fp32), with our config in the header."""
    keys = set(hf_key_map(model.config.dims.layers))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in keys}
    if model.class_embed is not None:
        state[CLASS_EMBED_KEY] = model.class_embed.weight.detach().contiguous().cpu()
    meta = {"format": "pt", "fastcar.config": json.dumps(model.config.to_dict())}
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)


def load_hf_llama(
    path: str | Path,
    dims: ModelDims,
    *,
    codebook_size: int | None = None,
    num_classes: int = 0,
    frames: int = 8,
    tokens_per_frame: int = 64,
    rope_theta: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    class_embedding: bool = False,
) -> ARVideoTransformer:
    """Load a local Llama-family safetensors checkpoint (HF key names) into :class:`ARVideoTransformer`.

    ``path`` is a ``.safetensors`` file or a directory of shards (``*.safetensors``). ``dims`` must match
    the tensors (checked key by key, with a message naming the first mismatch). For a real model, the
    visual codes are the first ``codebook_size`` vocabulary ids (default: all but ``num_classes + 1``), and
    the class/unconditional prompt tokens follow them -- remap ids upstream if your model differs.
    """
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no safetensors checkpoint at {path}")
    cb = codebook_size if codebook_size is not None else dims.vocab - num_classes - 1
    config = ARConfig(
        dims, cb, num_classes, frames, tokens_per_frame, rope_theta, class_embedding=class_embedding
    )
    model = ARVideoTransformer(config)
    expected = model.state_dict()
    wanted = set(hf_key_map(dims.layers)) | ({CLASS_EMBED_KEY} if class_embedding else set())
    loaded: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for key in sf.keys():  # noqa: SIM118 -- safe_open is not a dict
                if key in wanted:
                    loaded[key] = sf.get_tensor(key)
    if "lm_head.weight" not in loaded and "model.embed_tokens.weight" in loaded:
        loaded["lm_head.weight"] = loaded["model.embed_tokens.weight"]  # tied embeddings
    missing = sorted(wanted - loaded.keys())
    if missing:
        raise KeyError(f"checkpoint {path} lacks {len(missing)} key(s), first: {missing[0]}")
    if class_embedding:  # stored under our own key, loaded under the module's name
        loaded["class_embed.weight"] = loaded.pop(CLASS_EMBED_KEY)
    for key, tensor in loaded.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{key}: checkpoint shape {tuple(tensor.shape)} != dims shape {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v.to(torch.float32) for k, v in loaded.items()}, strict=False)
    return model.to(dtype).eval()


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as sf:
        return dict(sf.metadata() or {})


def tokenizer_path(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + "_tokenizer.safetensors")


def save_tokenizer(vq: PatchVQ, path: str | Path) -> None:
    save_file({"codebook": vq.codebook.contiguous()}, str(path), metadata={"patch": str(vq.patch)})


def load_tokenizer(path: str | Path) -> PatchVQ:
    with safe_open(str(path), framework="pt") as sf:
        return PatchVQ(sf.get_tensor("codebook"), int((sf.metadata() or {})["patch"]))


def load_checkpoint(path: str | Path | None = None) -> tuple[ARVideoTransformer, PatchVQ, dict[str, Any]]:
    """The shipped model (or one saved by :func:`save_hf_llama` with our config): model, tokenizer, info."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    meta = read_metadata(path)
    if "fastcar.config" not in meta:
        raise ValueError(f"{path} has no fastcar.config metadata; use load_hf_llama with explicit dims")
    cfg = ARConfig.from_dict(json.loads(meta["fastcar.config"]))
    model = load_hf_llama(
        path,
        cfg.dims,
        codebook_size=cfg.codebook_size,
        num_classes=cfg.num_classes,
        frames=cfg.frames,
        tokens_per_frame=cfg.tokens_per_frame,
        rope_theta=cfg.rope_theta,
        class_embedding=cfg.class_embedding,
    )
    info = json.loads(meta.get("fastcar.info", "{}"))
    return model, load_tokenizer(tokenizer_path(path)), info
