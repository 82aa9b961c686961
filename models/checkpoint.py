"""Checkpoints: the shipped tiny model and Hugging Face Llama safetensors.

The transformer is stored with HF Llama key names (``model.layers.{i}.self_attn.q_proj.weight``, ...), so
the shipped checkpoint and a real Llama-family checkpoint go through the same loader. Our config (token
layout, classes, frames) rides in the safetensors header metadata; the tokenizer's codebook is a separate
small file next to it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cosim.errors import InputError, is_finite_number, is_int, reason
from models.dims import ModelDims
from models.tokenizer import PatchVQ
from models.transformer import ARConfig, ARVideoTransformer

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "fastcar_tiny.safetensors"
#: Our one non-Llama tensor (optional): the per-position class vector.
CLASS_EMBED_KEY = "fastcar.class_embed.weight"
#: Header metadata keys: our :class:`ARConfig` as JSON, and training information as JSON.
CONFIG_KEY = "fastcar.config"
INFO_KEY = "fastcar.info"
#: Most positions (frames x tokens per frame) a stored config may ask RoPE tables for.
MAX_POSITIONS = 1 << 20


class CheckpointError(InputError):
    """A checkpoint or tokenizer file that cannot be used: one line naming the file and what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint (or tokenizer) at the path given; still a ``FileNotFoundError`` for older callers."""


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
    meta = {"format": "pt", CONFIG_KEY: json.dumps(model.config.to_dict())}
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)


def hf_shapes(dims: ModelDims, *, num_classes: int = 0, class_embedding: bool = False):
    """``(key, shape)`` of every tensor :func:`load_hf_llama` needs, in :func:`hf_key_map` order, computed
    from ``dims`` alone (lazily, so a config claiming absurd dims costs nothing before the first miss)."""
    h, v = dims.hidden, dims.vocab
    yield "model.embed_tokens.weight", (v, h)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (v, h)
    for i in range(dims.layers):
        pre = f"model.layers.{i}."
        yield pre + "input_layernorm.weight", (h,)
        yield pre + "post_attention_layernorm.weight", (h,)
        yield pre + "self_attn.q_proj.weight", (dims.q_dim, h)
        yield pre + "self_attn.k_proj.weight", (dims.kv_dim, h)
        yield pre + "self_attn.v_proj.weight", (dims.kv_dim, h)
        yield pre + "self_attn.o_proj.weight", (h, dims.q_dim)
        yield pre + "mlp.gate_proj.weight", (dims.mlp_hidden, h)
        yield pre + "mlp.up_proj.weight", (dims.mlp_hidden, h)
        yield pre + "mlp.down_proj.weight", (h, dims.mlp_hidden)
    if class_embedding:
        yield CLASS_EMBED_KEY, (num_classes + 1, h)


def _shape(shape: tuple[int, ...] | list[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + (",)" if len(shape) == 1 else ")")


@contextmanager
def _open(path: Path, what: str = "checkpoint") -> Iterator[Any]:
    """``safe_open`` with every way a file can be unusable turned into a :class:`CheckpointError`."""
    try:
        sf = safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or reason(exc)})") from None
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path}: not a valid safetensors file, truncated or corrupt ({reason(exc)})"
        ) from None
    with sf:
        yield sf


def _dtype(sf: Any, key: str, path: Path) -> str:
    try:
        return str(sf.get_slice(key).get_dtype())
    except (SafetensorError, OSError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: tensor {key} cannot be read ({reason(exc)})") from None


def _tensor(sf: Any, key: str, path: Path) -> torch.Tensor:
    """One floating-point tensor with only finite values (flipped data bytes often give NaN/inf)."""
    dtype = _dtype(sf, key, path)
    if not dtype.startswith(("F", "BF")):
        raise CheckpointError(
            f"{path}: tensor {key} has dtype {dtype}, a weight needs a floating-point dtype"
        )
    try:
        tensor = sf.get_tensor(key)
    except (SafetensorError, OSError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: tensor {key} cannot be read ({reason(exc)})") from None
    if not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{path}: tensor {key} holds NaN or infinite values (corrupt data)")
    return tensor


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
    norm_eps: float = 1e-5,
) -> ARVideoTransformer:
    """Load a local Llama-family safetensors checkpoint (HF key names) into :class:`ARVideoTransformer`.

    ``path`` is a ``.safetensors`` file or a directory of shards (``*.safetensors``). ``dims`` must match
    the tensors (checked key by key from the headers before any weight is read, with a message naming the
    first mismatch). For a real model, the visual codes are the first ``codebook_size`` vocabulary ids
    (default: all but ``num_classes + 1``), and the class/unconditional prompt tokens follow them -- remap
    ids upstream if your model differs. Every unusable file raises :class:`CheckpointError` naming it.
    """
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise CheckpointNotFoundError(f"{path}: no *.safetensors checkpoint in this directory")
    if not all(f.is_file() for f in files):
        raise CheckpointNotFoundError(f"{next(f for f in files if not f.is_file())}: checkpoint not found")
    cb = codebook_size if codebook_size is not None else dims.vocab - num_classes - 1
    try:
        config = ARConfig(
            dims,
            cb,
            num_classes,
            frames,
            tokens_per_frame,
            rope_theta,
            norm_eps,
            class_embedding=class_embedding,
        )
    except ValueError as exc:
        raise CheckpointError(f"{path}: the config does not describe a model ({reason(exc)})") from None
    if dims.mlp_kind != "swiglu":
        raise CheckpointError(
            f"{path}: mlp_kind {dims.mlp_kind!r}: only the SwiGLU MLP (Llama) is implemented"
        )
    # which file holds each tensor (headers only), then shapes against the dims, then the data
    where: dict[str, list[Path]] = {}
    with ExitStack() as stack:
        handles = {f: stack.enter_context(_open(f)) for f in files}
        for f, sf in handles.items():
            for key in sf.keys():  # noqa: SIM118 -- safe_open is not a dict
                where.setdefault(key, []).append(f)
        tied = "lm_head.weight" not in where  # tied embeddings: the head reuses the token embedding
        sources: dict[str, str] = {}  # module key -> stored key
        for key, shape in hf_shapes(dims, num_classes=num_classes, class_embedding=class_embedding):
            src = "model.embed_tokens.weight" if key == "lm_head.weight" and tied else key
            if src not in where:
                name = files[0] if len(files) == 1 else path
                raise CheckpointError(f"{name}: tensor {key} is missing (the config needs it)")
            if len(where[src]) > 1:
                raise CheckpointError(f"{where[src][1]}: tensor {src} is also in {where[src][0].name}")
            have = tuple(handles[where[src][0]].get_slice(src).get_shape())
            if have != shape:
                raise CheckpointError(
                    f"{where[src][0]}: tensor {src} has shape {_shape(have)}, "
                    f"the config needs {_shape(shape)}"
                )
            sources[key] = src
        data = {src: _tensor(handles[where[src][0]], src, where[src][0]) for src in set(sources.values())}
    loaded = {key: data[src] for key, src in sources.items()}
    if class_embedding:  # stored under our own key, loaded under the module's name
        loaded["class_embed.weight"] = loaded.pop(CLASS_EMBED_KEY)
    model = ARVideoTransformer(config)
    expected = model.state_dict()
    for key, tensor in loaded.items():  # hf_shapes and the module agree; a safety net if they drift
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: tensor {key} has shape {_shape(tensor.shape)}, "
                f"the config needs {_shape(expected[key].shape)}"
            )
    model.load_state_dict({k: v.to(torch.float32) for k, v in loaded.items()}, strict=False)
    return model.to(dtype).eval()


def read_metadata(path: str | Path) -> dict[str, str]:
    with _open(Path(path)) as sf:
        return dict(sf.metadata() or {})


def tokenizer_path(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + "_tokenizer.safetensors")


def save_tokenizer(vq: PatchVQ, path: str | Path) -> None:
    save_file({"codebook": vq.codebook.contiguous()}, str(path), metadata={"patch": str(vq.patch)})


def load_tokenizer(path: str | Path, codebook_size: int | None = None) -> PatchVQ:
    """The patch codebook; ``codebook_size``: the codes the model emits, which the codebook must cover."""
    path = Path(path)
    with _open(path, "tokenizer") as sf:
        if "codebook" not in sf.keys():  # noqa: SIM118 -- safe_open is not a dict
            raise CheckpointError(f"{path}: tokenizer has no tensor 'codebook'")
        shape = tuple(sf.get_slice("codebook").get_shape())
        raw_patch = (sf.metadata() or {}).get("patch")
        if raw_patch is None or not raw_patch.strip().isdigit() or int(raw_patch) < 1:
            raise CheckpointError(
                f"{path}: tokenizer metadata 'patch' is {raw_patch!r}, it must be a positive integer"
            )
        patch = int(raw_patch)
        width = patch * patch * 3
        if len(shape) != 2 or shape[0] < 1 or shape[1] != width:
            raise CheckpointError(
                f"{path}: tensor codebook has shape {_shape(shape)}, patch {patch} needs (codes, {width})"
            )
        if codebook_size is not None and shape[0] < codebook_size:
            raise CheckpointError(
                f"{path}: tokenizer has {shape[0]} codes, the checkpoint's config needs {codebook_size}"
            )
        return PatchVQ(_tensor(sf, "codebook", path), patch)


def config_from_metadata(path: str | Path, meta: dict[str, str]) -> ARConfig:
    """Our config (``fastcar.config``, JSON in the safetensors header), checked field by field."""
    path = Path(path)
    where = f"{path}: {CONFIG_KEY}"
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{path}: no {CONFIG_KEY} metadata (not saved by this project); "
            "load it with models.checkpoint.load_hf_llama and explicit dims"
        )
    try:
        d = json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where} is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{where} is a JSON {type(d).__name__}, not an object")
    known = {f.name for f in dataclasses.fields(ARConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("dims", "codebook_size", "num_classes"):
        if key not in d:
            raise CheckpointError(f"{where}: missing key {key!r}")
    if not isinstance(d["dims"], dict):
        raise CheckpointError(f"{where}: dims is not an object")
    try:
        dims = ModelDims(**d["dims"])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise CheckpointError(f"{where}: dims{'.' + loc if loc else ''}: {err['msg']}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: dims: {reason(exc)}") from None
    for key in ("codebook_size", "num_classes", "frames", "tokens_per_frame"):
        if key in d and not (is_int(d[key]) and d[key] > 0):
            raise CheckpointError(f"{where}: {key} is {d[key]!r}, it must be a positive integer")
    for key in ("rope_theta", "norm_eps"):
        if key in d and not (is_finite_number(d[key]) and d[key] > 0):
            raise CheckpointError(f"{where}: {key} is {d[key]!r}, it must be a positive number")
    if "class_embedding" in d and not isinstance(d["class_embedding"], bool):
        raise CheckpointError(
            f"{where}: class_embedding is {d['class_embedding']!r}, it must be true or false"
        )
    if "extra" in d and not isinstance(d["extra"], dict):
        raise CheckpointError(f"{where}: extra is not an object")
    tpf = d.get("tokens_per_frame", 64)
    if math.isqrt(tpf) ** 2 != tpf:
        raise CheckpointError(f"{where}: tokens_per_frame {tpf} is not a square grid of tokens")
    positions = d.get("frames", 8) * tpf
    if positions > MAX_POSITIONS:
        raise CheckpointError(f"{where}: frames x tokens_per_frame = {positions} exceeds {MAX_POSITIONS}")
    try:
        return ARConfig(**{**d, "dims": dims})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {reason(exc)}") from None


def load_checkpoint(path: str | Path | None = None) -> tuple[ARVideoTransformer, PatchVQ, dict[str, Any]]:
    """The shipped model (or one saved by :func:`save_hf_llama` with our config): model, tokenizer, info.

    Raises :class:`CheckpointError` (a :class:`~cosim.errors.InputError`) naming the file and the reason
    for anything unusable: a missing, truncated or corrupt file, a bad ``fastcar.config``, a missing
    tensor or one of the wrong shape, an unusable tokenizer next to it.
    """
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: checkpoint not found")
    meta = read_metadata(path)
    cfg = config_from_metadata(path, meta)
    try:
        info = json.loads(meta.get(INFO_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: {INFO_KEY} is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: {INFO_KEY} is a JSON {type(info).__name__}, not an object")
    model = load_hf_llama(
        path,
        cfg.dims,
        codebook_size=cfg.codebook_size,
        num_classes=cfg.num_classes,
        frames=cfg.frames,
        tokens_per_frame=cfg.tokens_per_frame,
        rope_theta=cfg.rope_theta,
        class_embedding=cfg.class_embedding,
        norm_eps=cfg.norm_eps,
    )
    vq = load_tokenizer(tokenizer_path(path), codebook_size=cfg.codebook_size)
    return model, vq, info
