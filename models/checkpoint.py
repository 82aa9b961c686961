"""Checkpoints: the shipped tiny model and Hugging Face Llama safetensors.

The transformer is stored with HF Llama key names (``model.layers.{i}.self_attn.q_proj.weight``, ...), so
the shipped checkpoint and a real Llama-family checkpoint go through the same loader. Our config (token
layout, classes, frames) rides in the safetensors header metadata; the tokenizer is a separate small file
next to it: a patch codebook or an FSQ autoencoder, told apart by its metadata ``kind``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cosim.errors import InputError, is_finite_number, is_int, reason, shown
from models.dims import ModelDims
from models.fsq import FSQConfig, FSQTokenizer
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


def hf_key_map(layers: int, *, qkv_bias: bool = False, o_bias: bool = False) -> list[str]:
    """Every key a HF ``LlamaForCausalLM`` state dict has (besides rotary buffers)."""
    keys = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(layers):
        pre = f"model.layers.{i}."
        keys += [
            pre + "input_layernorm.weight",
            pre + "post_attention_layernorm.weight",
            *(pre + f"self_attn.{m}_proj.weight" for m in "qkvo"),
            *(pre + f"self_attn.{m}_proj.bias" for m in "qkv" if qkv_bias),
            *([pre + "self_attn.o_proj.bias"] if o_bias else []),
            *(pre + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")),
        ]
    return keys


def save_hf_llama(
    model: ARVideoTransformer, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write the transformer as HF-keyed safetensors (fp32), with our config in the header. A head that
    shares its weight with the token embedding (tied) is not stored: the loader ties it again."""
    cfg = model.config
    keys = set(hf_key_map(cfg.dims.layers, qkv_bias=cfg.qkv_bias, o_bias=cfg.o_bias))
    if model.lm_head.weight is model.model.embed_tokens.weight:
        keys.discard("lm_head.weight")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in keys}
    if model.class_embed is not None:
        state[CLASS_EMBED_KEY] = model.class_embed.weight.detach().contiguous().cpu()
    meta = {"format": "pt", CONFIG_KEY: json.dumps(cfg.to_dict())}
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)


def hf_shapes(
    dims: ModelDims,
    *,
    num_classes: int = 0,
    class_embedding: bool = False,
    qkv_bias: bool = False,
    o_bias: bool = False,
):
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
        if qkv_bias:
            yield pre + "self_attn.q_proj.bias", (dims.q_dim,)
            yield pre + "self_attn.k_proj.bias", (dims.kv_dim,)
            yield pre + "self_attn.v_proj.bias", (dims.kv_dim,)
        if o_bias:
            yield pre + "self_attn.o_proj.bias", (h,)
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


# -- reading weights tensor by tensor ------------------------------------------------------------------

#: The stored dtypes a weight may have, and the torch dtype each is read as.
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
#: Values read per block: a tensor is copied from the file into its parameter through a buffer of at most
#: this many values (4 MiB in fp32), converted block by block, so no second copy of a tensor is ever held.
READ_BLOCK = 1 << 20
#: The file naming the shard of every tensor in a sharded Hugging Face checkpoint.
INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class _Stored:
    """Where one tensor's bytes are: its file, dtype, shape and absolute byte range."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _entries(path: Path) -> dict[str, _Stored]:
    """Every tensor of one safetensors file, from its header alone (``safe_open`` checks the header and that
    the offsets cover the file; the byte offsets are then read from the same header)."""
    with _open(path) as sf:
        keys = list(sf.keys())  # noqa: SIM118 -- safe_open is not a dict
    try:
        with path.open("rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
        base = 8 + size
        return {
            key: _Stored(
                path,
                str(header[key]["dtype"]),
                tuple(int(n) for n in header[key]["shape"]),
                base + int(header[key]["data_offsets"][0]),
                base + int(header[key]["data_offsets"][1]),
            )
            for key in keys
        }
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or reason(exc)})") from None
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:  # changed under our feet
        raise CheckpointError(f"{path}: header changed while being read ({reason(exc)})") from None


def _read_exact(f: Any, buffer: memoryview, stored: _Stored, key: str) -> None:
    done = 0
    while done < len(buffer):
        got = f.readinto(buffer[done:])
        if not got:
            raise CheckpointError(f"{stored.file}: tensor {key} is cut short (the file was truncated)")
        done += got


def _read_into(target: torch.Tensor, stored: _Stored, key: str, f: Any) -> None:
    """Copy one stored tensor into ``target`` (contiguous, its shape), converting to ``target``'s dtype block
    by block straight from the file: no memory map and no whole-tensor temporary. Checks every value is
    finite (flipped data bytes often give NaN/inf; a float64 value may not fit a float32 model)."""
    src = FLOAT_DTYPES[stored.dtype]
    flat = target.view(-1)
    n = flat.numel()
    buf = None if src == target.dtype else torch.empty(min(n, READ_BLOCK), dtype=src)
    f.seek(stored.begin)
    for i in range(0, n, READ_BLOCK):
        part = flat[i : i + READ_BLOCK]
        raw = part if buf is None else buf[: part.numel()]
        _read_exact(f, memoryview(raw.view(torch.uint8).numpy()), stored, key)
        if buf is not None:
            part.copy_(raw)
        if not bool(torch.isfinite(part).all()):
            why = (
                "holds NaN or infinite values (corrupt data)"
                if buf is None or not bool(torch.isfinite(raw).all())
                else f"has values beyond the range of {str(target.dtype).removeprefix('torch.')}"
            )
            raise CheckpointError(f"{stored.file}: tensor {key} {why}")


def _read_json(file: Path) -> Any:
    """A checkpoint's JSON file, or one CheckpointError naming it and what is wrong."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read it ({exc.strerror or reason(exc)})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{file}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


def _read_index(index: Path) -> dict[str, str]:
    """``weight_map`` of a ``model.safetensors.index.json``: tensor name -> shard file name."""
    d = _read_json(index)
    weight_map = d.get("weight_map") if isinstance(d, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no weight_map object (tensor name -> shard file)")
    for key, name in weight_map.items():
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise CheckpointError(
                f"{index}: weight_map: {key} is in {shown(name)}, not a file name in this directory"
            )
    return weight_map


def _weight_files(path: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a checkpoint (a file, or a directory of shards with or without an index)
    and, with an index, which file each tensor is in."""
    if not path.is_dir():
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path}: checkpoint not found")
        return [path], None
    index = path / INDEX_NAME
    if index.exists():
        weight_map = _read_index(index)
        files = [path / name for name in sorted(set(weight_map.values()))]
        if not files:
            raise CheckpointError(f"{index}: weight_map lists no shard")
        for f in files:
            if not f.is_file():
                raise CheckpointNotFoundError(f"{f}: shard not found (listed in {INDEX_NAME})")
        return files, weight_map
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointNotFoundError(f"{path}: no *.safetensors checkpoint in this directory")
    if not all(f.is_file() for f in files):
        raise CheckpointNotFoundError(f"{next(f for f in files if not f.is_file())}: checkpoint not found")
    return files, None


#: Stored tensors a Llama-family checkpoint may hold that the model does not use and that change nothing.
_HARMLESS_EXTRA = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


def load_hf_llama(
    path: str | Path,
    dims: ModelDims,
    *,
    codebook_size: int | None = None,
    num_classes: int = 0,
    frames: int = 8,
    tokens_per_frame: int = 64,
    rope_theta: float = 10000.0,
    dtype: torch.dtype | None = torch.float32,
    class_embedding: bool = False,
    norm_eps: float = 1e-5,
    qkv_bias: bool = False,
    o_bias: bool = False,
    tie_word_embeddings: bool | None = None,
    strict: bool = False,
) -> ARVideoTransformer:
    """Load a local Llama-family safetensors checkpoint (HF key names) into :class:`ARVideoTransformer`.

    ``path`` is a ``.safetensors`` file or a directory of shards (``*.safetensors``, or the shards its
    ``model.safetensors.index.json`` lists). ``dims`` must match the tensors (checked key by key from the
    headers before any weight is read, with a message naming the first mismatch). For a real model, the
    visual codes are the first ``codebook_size`` vocabulary ids (default: all but ``num_classes + 1``), and
    the class/unconditional prompt tokens follow them -- remap ids upstream if your model differs. Every
    unusable file raises :class:`CheckpointError` naming it. :func:`load_hf_checkpoint` reads all of this
    from the checkpoint's ``config.json`` instead.

    Weights are read tensor by tensor from the files into the model's parameters (no random init, no
    memory map, no second copy), converted to ``dtype`` on the way (``None``: the stored dtype when every
    weight has the same one, else float32). ``tie_word_embeddings``: the head shares the token embedding
    (``None``: when the checkpoint has no ``lm_head.weight``). ``strict``: a stored tensor the model does not
    use (other than rotary buffers) is an error instead of being ignored.
    """
    path = Path(path)
    files, weight_map = _weight_files(path)
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
            qkv_bias=qkv_bias,
            o_bias=o_bias,
        )
    except ValueError as exc:
        raise CheckpointError(f"{path}: the config does not describe a model ({reason(exc)})") from None
    if dims.mlp_kind != "swiglu":
        raise CheckpointError(
            f"{path}: mlp_kind {dims.mlp_kind!r}: only the SwiGLU MLP (Llama) is implemented"
        )
    # which file holds each tensor (headers only), then shapes and dtypes against the dims, then the data
    where: dict[str, list[_Stored]] = {}
    for f in files:
        for key, stored in _entries(f).items():
            where.setdefault(key, []).append(stored)
    if weight_map is not None:
        for key, name in weight_map.items():
            if key in where and all(s.file.name != name for s in where[key]):
                raise CheckpointError(
                    f"{where[key][0].file}: tensor {key} is here, {INDEX_NAME} puts it in {name}"
                )
    tied = "lm_head.weight" not in where if tie_word_embeddings is None else tie_word_embeddings
    sources: dict[str, _Stored] = {}  # module key -> stored tensor
    shapes = hf_shapes(
        dims, num_classes=num_classes, class_embedding=class_embedding, qkv_bias=qkv_bias, o_bias=o_bias
    )
    for key, shape in shapes:
        if key == "lm_head.weight" and tied:
            continue  # the head is the token embedding's parameter
        if key not in where:
            if weight_map is not None and key in weight_map:
                raise CheckpointError(
                    f"{path / weight_map[key]}: tensor {key} is missing ({INDEX_NAME} puts it in this shard)"
                )
            name = files[0] if len(files) == 1 else path
            raise CheckpointError(f"{name}: tensor {key} is missing (the config needs it)")
        if len(where[key]) > 1:
            raise CheckpointError(f"{where[key][1].file}: tensor {key} is also in {where[key][0].file.name}")
        stored = where[key][0]
        if stored.shape != shape:
            raise CheckpointError(
                f"{stored.file}: tensor {key} has shape {_shape(stored.shape)}, the config needs {_shape(shape)}"
            )
        if stored.dtype not in FLOAT_DTYPES:
            kind = "a weight needs a floating-point dtype"
            if stored.dtype.startswith("F8"):
                kind = "fp8 (quantized) weights are not supported"
            raise CheckpointError(f"{stored.file}: tensor {key} has dtype {stored.dtype}, {kind}")
        sources[key] = stored
    if strict:
        unused = sorted(
            k
            for k in where
            if k not in sources and not _HARMLESS_EXTRA.fullmatch(k) and not (k == "lm_head.weight" and tied)
        )
        if unused:
            raise CheckpointError(
                f"{where[unused[0]][0].file}: tensor {unused[0]} is not part of the model the config "
                "describes (refused rather than ignored)"
            )
    if dtype is None:
        stored_dtypes = {s.dtype for s in sources.values()}
        dtype = FLOAT_DTYPES[stored_dtypes.pop()] if len(stored_dtypes) == 1 else torch.float32
    model = ARVideoTransformer.empty(config, dtype)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    params = dict(model.named_parameters())
    params.update({CLASS_EMBED_KEY: params.pop("class_embed.weight")} if class_embedding else {})
    missing = set(params) - set(sources)
    if missing:  # hf_shapes and the module disagree: a bug, never leave a parameter uninitialised
        raise RuntimeError(f"load_hf_llama: no source for parameters {sorted(missing)}")
    for key, stored in sources.items():  # hf_shapes and the module agree; a safety net if they drift
        if tuple(params[key].shape) != stored.shape:
            raise RuntimeError(f"load_hf_llama: {key} is {tuple(params[key].shape)} in the module")
    by_file: dict[Path, list[tuple[str, _Stored]]] = {}
    for key, stored in sources.items():
        by_file.setdefault(stored.file, []).append((key, stored))
    with torch.no_grad():
        for file, items in by_file.items():
            try:
                with file.open("rb") as f:
                    for key, stored in sorted(items, key=lambda item: item[1].begin):  # file order
                        _read_into(params[key].data, stored, key, f)
            except OSError as exc:
                raise CheckpointError(
                    f"{file}: cannot read the checkpoint ({exc.strerror or reason(exc)})"
                ) from None
    return model.eval()


# -- Hugging Face checkpoints: config.json + shards ------------------------------------------------------

HF_CONFIG_NAME = "config.json"
#: ``model_type`` values whose decoder is exactly this module (given the checks in :func:`read_hf_config`).
HF_MODEL_TYPES = ("llama", "mistral", "qwen2")
#: What transformers takes for a field config.json leaves out (LlamaConfig, MistralConfig, Qwen2Config).
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        "num_key_value_heads": None,  # = num_attention_heads
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    },
    "mistral": {
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "sliding_window": 4096,
    },
    "qwen2": {
        "num_key_value_heads": 32,
        "max_position_embeddings": 32768,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
    },
}
#: Fields every model type may have that the loader reads.
_HF_READ = frozenset(
    {
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
        "hidden_act",
        "head_dim",
        "rope_scaling",
        "rope_parameters",
        "layer_types",
    }
)
#: Fields that do not change the logits of a forward pass in inference: names and versions, token ids,
#: dropout (off in inference), ``pretraining_tp`` (the same products split in slices), generation settings
#: (sampling, not logits; the capture samples its own way) and other PretrainedConfig bookkeeping.
_HF_HARMLESS = frozenset(
    {
        "architectures",
        "_name_or_path",
        "name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "initializer_range",
        "use_cache",
        "attention_dropout",
        "pretraining_tp",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_return_dict",
        "is_decoder",
        "is_encoder_decoder",
        "add_cross_attention",
        "tie_encoder_decoder",
        "cross_attention_hidden_size",
        "chunk_size_feed_forward",
        "torchscript",
        "use_bfloat16",
        "pruned_heads",
        "problem_type",
        "finetuning_task",
        "id2label",
        "label2id",
        "num_labels",
        "tokenizer_class",
        "prefix",
        "task_specific_params",
        "tf_legacy_loss",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "attn_implementation",
        "_commit_hash",
        "max_length",
        "min_length",
        "do_sample",
        "early_stopping",
        "num_beams",
        "num_beam_groups",
        "diversity_penalty",
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "length_penalty",
        "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size",
        "bad_words_ids",
        "num_return_sequences",
        "output_scores",
        "return_dict_in_generate",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "remove_invalid_values",
        "exponential_decay_length_penalty",
        "suppress_tokens",
        "begin_suppress_tokens",
    }
)
#: Config dims field for each ModelDims field (error messages name what the user can see in the file).
_HF_DIM_FIELDS = {
    "layers": "num_hidden_layers",
    "hidden": "hidden_size",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "mlp_hidden": "intermediate_size",
    "vocab": "vocab_size",
}


@dataclass(frozen=True)
class HFConfig:
    """What a Hugging Face ``config.json`` says about the decoder, checked to be exactly this module."""

    file: Path  # the config.json
    model_type: str
    dims: ModelDims
    rope_theta: float
    norm_eps: float
    max_positions: int  # max_position_embeddings
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    window: int | None  # a sliding attention window some layer uses, or None (full attention)


def hf_config_path(path: str | Path) -> Path:
    """The ``config.json`` of a Hugging Face checkpoint: in its directory, or beside its one file."""
    path = Path(path)
    config = (path if path.is_dir() else path.parent) / HF_CONFIG_NAME
    if not config.is_file():
        where = (
            "a Hugging Face checkpoint directory needs it beside its *.safetensors shards"
            if path.is_dir()
            else f"{path.name} has no {CONFIG_KEY} metadata, so it is read as a Hugging Face checkpoint, "
            "which needs its model's config.json beside it"
        )
        raise CheckpointNotFoundError(f"{config}: not found ({where})")
    return config


def is_hf_checkpoint(path: str | Path) -> bool:
    """A directory, or a safetensors file without our ``fastcar.config`` metadata (missing: an error)."""
    path = Path(path)
    if path.is_dir():
        return True
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: checkpoint not found")
    return CONFIG_KEY not in read_metadata(path)


def read_hf_config(path: str | Path) -> HFConfig:
    """Parse and check a Hugging Face ``config.json`` (``path``: the file, or a checkpoint directory or file
    beside it). Every field that changes the logits is either honoured exactly or refused, naming it; a
    field this loader does not know is refused too (it might change the logits)."""
    path = Path(path)
    file = path if path.name == HF_CONFIG_NAME and path.is_file() else hf_config_path(path)
    d = _read_json(file)
    if not isinstance(d, dict):
        raise CheckpointError(f"{file}: a JSON {type(d).__name__}, not an object")

    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{file}: {key} is {shown(d.get(key))}, {why}")

    model_type = d.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        if "model_type" not in d:
            raise CheckpointError(f"{file}: model_type is missing (supported: {', '.join(HF_MODEL_TYPES)})")
        raise bad(
            "model_type", f"not a supported Llama-family decoder (supported: {', '.join(HF_MODEL_TYPES)})"
        )
    defaults = _HF_DEFAULTS[model_type]
    for key in ("quantization_config", "auto_map"):
        if key in d:
            why = "quantized weights" if key == "quantization_config" else "the model's own code"
            raise CheckpointError(f"{file}: {key}: {why} are not supported by this loader")
    for key in d:
        if key not in _HF_READ and key not in _HF_HARMLESS and key not in defaults:
            raise CheckpointError(
                f"{file}: {key}: a field this loader does not know for model_type {model_type} "
                "(it may change the logits, so it is refused rather than ignored)"
            )

    def get(key: str) -> Any:
        return d[key] if key in d else defaults.get(key)

    def positive_int(key: str, required: bool = True) -> int | None:
        value = get(key)
        if value is None and not required:
            return None
        if key not in d and required and key not in defaults:
            raise CheckpointError(f"{file}: {key} is missing")
        if not (is_int(value) and value > 0):
            raise bad(key, "it must be a positive integer")
        return int(value)

    def positive_number(key: str) -> float:
        value = get(key)
        if not (is_finite_number(value) and value > 0):
            raise bad(key, "it must be a positive number")
        return float(value)

    def flag(key: str) -> bool:
        value = get(key)
        if not isinstance(value, bool):
            raise bad(key, "it must be true or false")
        return value

    hidden = positive_int("hidden_size")
    layers = positive_int("num_hidden_layers")
    heads = positive_int("num_attention_heads")
    kv_heads = positive_int("num_key_value_heads", required=False) or heads
    head_dim = positive_int("head_dim", required=False)
    mlp_hidden = positive_int("intermediate_size")
    vocab = positive_int("vocab_size")
    max_positions = positive_int("max_position_embeddings")
    norm_eps = positive_number("rms_norm_eps")
    rope_theta = positive_number("rope_theta")
    tie = flag("tie_word_embeddings")
    act = get("hidden_act")
    if act not in ("silu", "swish"):
        raise bad("hidden_act", "only silu (a SwiGLU MLP, as Llama) is supported")
    scaling = d.get("rope_scaling")
    if scaling is not None and not (
        isinstance(scaling, dict)
        and scaling.get("rope_type", scaling.get("type")) == "default"
        and set(scaling) <= {"rope_type", "type"}
    ):
        raise bad("rope_scaling", "scaled RoPE is not supported (only rope_scaling: null)")
    params = d.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict) or set(params) - {"rope_type", "type", "rope_theta"}:
            raise bad("rope_parameters", "only plain RoPE (rope_type default and rope_theta) is supported")
        if params.get("rope_type", params.get("type", "default")) != "default":
            raise bad("rope_parameters", "scaled RoPE is not supported (only rope_type: default)")
        if "rope_theta" in params:
            theta = params["rope_theta"]
            if not (is_finite_number(theta) and theta > 0):
                raise bad("rope_parameters", "its rope_theta must be a positive number")
            if "rope_theta" in d and float(theta) != rope_theta:
                raise bad("rope_parameters", f"its rope_theta disagrees with rope_theta {rope_theta}")
            rope_theta = float(theta)
    qkv_bias = o_bias = False
    if model_type == "llama":
        qkv_bias = o_bias = flag("attention_bias")
        if flag("mlp_bias"):
            raise bad("mlp_bias", "MLP biases are not supported")
    if model_type == "qwen2":
        qkv_bias = True  # Qwen2 always has q/k/v biases, no o_proj bias
    window = None
    sliding = model_type == "mistral" and get("sliding_window") is not None
    if model_type == "qwen2":
        sliding = flag("use_sliding_window")
        if get("max_window_layers") is not None and not is_int(get("max_window_layers")):
            raise bad("max_window_layers", "it must be an integer")
    layer_types = d.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or any(
            t not in ("full_attention", "sliding_attention") for t in layer_types
        ):
            raise bad("layer_types", "it must list full_attention or sliding_attention per layer")
        sliding = sliding or "sliding_attention" in layer_types
    if sliding:
        window = positive_int("sliding_window", required=False)
        if window is None:
            raise CheckpointError(f"{file}: sliding_window is null, but layers use a sliding window")
    try:
        dims = ModelDims(
            name=(path if path.is_dir() else file.parent).name or "hf-checkpoint",
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            mlp_hidden=mlp_hidden,
            mlp_kind="swiglu",
            vocab=vocab,
            source=str(file),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(_HF_DIM_FIELDS.get(str(p), str(p)) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        for ours, theirs in _HF_DIM_FIELDS.items():
            msg = re.sub(rf"\b{ours}\b", theirs, msg)
        raise CheckpointError(f"{file}: {loc + ': ' if loc else ''}{msg}") from None
    return HFConfig(
        file, model_type, dims, rope_theta, norm_eps, max_positions, tie, qkv_bias, o_bias, window
    )


def load_hf_checkpoint(
    path: str | Path,
    *,
    frames: int,
    tokens_per_frame: int,
    num_classes: int = 1,
    codebook_size: int | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> tuple[ARVideoTransformer, HFConfig]:
    """A Hugging Face Llama-family checkpoint (a directory with ``config.json`` and its shards, or one
    ``.safetensors`` file with ``config.json`` beside it), with everything :func:`load_hf_llama` needs
    read from ``config.json`` (:func:`read_hf_config`). The video layout is the caller's: ``frames`` x
    ``tokens_per_frame`` positions, prompt tokens at the end of the vocabulary (class ``c`` is id
    ``codebook_size + c``, the unconditional token the one after the classes), video tokens sampled from
    the first ``codebook_size`` ids (default: all the others). Every stored tensor must be used."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: checkpoint not found")
    hf = read_hf_config(path)
    index = path.parent / INDEX_NAME
    if path.is_file() and index.is_file() and len(set(_read_index(index).values()) - {path.name}) > 0:
        raise CheckpointError(
            f"{path}: one shard of a sharded checkpoint ({INDEX_NAME} beside it lists others); "
            "give the directory instead"
        )
    positions = frames * tokens_per_frame
    if positions > hf.max_positions:
        raise CheckpointError(
            f"{hf.file}: max_position_embeddings is {hf.max_positions}, fewer than the {positions} "
            "positions decoded (frames x tokens per frame)"
        )
    if hf.window is not None and hf.window < positions:
        raise CheckpointError(
            f"{hf.file}: sliding_window is {hf.window}, shorter than the {positions} positions decoded "
            "(frames x tokens per frame); sliding-window attention is not supported"
        )
    cb = codebook_size if codebook_size is not None else hf.dims.vocab - num_classes - 1
    if cb < 1:
        raise CheckpointError(
            f"{hf.file}: vocab_size is {hf.dims.vocab}: no ids left for video tokens after "
            f"{num_classes} class token(s) and the unconditional token"
        )
    model = load_hf_llama(
        path,
        hf.dims,
        codebook_size=cb,
        num_classes=num_classes,
        frames=frames,
        tokens_per_frame=tokens_per_frame,
        rope_theta=hf.rope_theta,
        norm_eps=hf.norm_eps,
        dtype=dtype,
        qkv_bias=hf.qkv_bias,
        o_bias=hf.o_bias,
        tie_word_embeddings=hf.tie_word_embeddings,
        strict=True,
    )
    return model, hf


def read_metadata(path: str | Path) -> dict[str, str]:
    with _open(Path(path)) as sf:
        return dict(sf.metadata() or {})


def tokenizer_path(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + "_tokenizer.safetensors")


#: Tokenizer kinds (header metadata ``kind``; a file without it is a patch codebook, as all older files are).
TOKENIZER_KINDS = ("patch_vq", "fsq")


def save_tokenizer(vq: PatchVQ | FSQTokenizer, path: str | Path) -> None:
    """Write a tokenizer: a patch codebook (kind ``patch_vq``, written without a ``kind`` field so such
    files stay byte-identical to those of earlier versions) or an FSQ autoencoder (kind ``fsq``: its
    weights plus its :class:`~models.fsq.FSQConfig` as JSON in the header)."""
    if isinstance(vq, FSQTokenizer):
        state = {k: v.detach().contiguous().cpu() for k, v in vq.state_dict().items()}
        meta = {"kind": "fsq", "fsq.config": json.dumps(vq.config.to_dict())}
        save_file(state, str(path), metadata=meta)
        return
    save_file(
        {"codebook": vq.codebook.contiguous()},
        str(path),
        metadata={"patch": str(vq.patch)},
    )


def load_tokenizer(path: str | Path, codebook_size: int | None = None) -> PatchVQ | FSQTokenizer:
    """The tokenizer next to a checkpoint, by its metadata ``kind`` (absent: ``patch_vq``);
    ``codebook_size``: the codes the model emits, which the tokenizer must cover."""
    path = Path(path)
    with _open(path, "tokenizer") as sf:
        meta = sf.metadata() or {}
        kind = meta.get("kind", "patch_vq")
        if kind not in TOKENIZER_KINDS:
            raise CheckpointError(
                f"{path}: tokenizer metadata 'kind' is {kind!r}, it must be one of {', '.join(TOKENIZER_KINDS)}"
            )
        if kind == "fsq":
            return _load_fsq(sf, path, meta, codebook_size)
        if "codebook" not in sf.keys():  # noqa: SIM118 -- safe_open is not a dict
            raise CheckpointError(f"{path}: tokenizer has no tensor 'codebook'")
        shape = tuple(sf.get_slice("codebook").get_shape())
        raw_patch = meta.get("patch")
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


def _load_fsq(sf: Any, path: Path, meta: dict[str, str], codebook_size: int | None) -> FSQTokenizer:
    """An FSQ tokenizer: config from ``fsq.config``, every weight present with its shape, finite."""
    raw = meta.get("fsq.config")
    if raw is None:
        raise CheckpointError(f"{path}: fsq tokenizer has no 'fsq.config' metadata")
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise TypeError(f"a JSON {type(d).__name__}, not an object")
        levels, channels, blocks = d["levels"], d["channels"], d["res_blocks"]
        ok = (
            isinstance(levels, list)
            and isinstance(channels, list)
            and 1 <= len(levels) <= 16
            and 1 <= len(channels) <= 6
            and all(is_int(v) and 2 <= v <= 1024 for v in levels)
            and all(is_int(v) and 1 <= v <= 4096 for v in channels)
            and is_int(blocks)
            and 0 <= blocks <= 64
        )
        if not ok:
            raise ValueError("levels, channels or res_blocks out of range")
        config = FSQConfig(levels=list(levels), channels=list(channels), res_blocks=blocks)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: fsq.config is unusable ({reason(exc)})") from None
    tok = FSQTokenizer(config)
    want = {k: tuple(v.shape) for k, v in tok.state_dict().items()}
    have = set(sf.keys())  # noqa: SIM118 -- safe_open is not a dict
    for key, shape in want.items():
        if key not in have:
            raise CheckpointError(f"{path}: fsq tokenizer has no tensor {key!r}")
        got = tuple(sf.get_slice(key).get_shape())
        if got != shape:
            raise CheckpointError(
                f"{path}: tensor {key} has shape {_shape(got)}, the fsq.config needs {_shape(shape)}"
            )
    extra = sorted(have - set(want))
    if extra:
        raise CheckpointError(f"{path}: fsq tokenizer has an unexpected tensor {extra[0]!r}")
    if codebook_size is not None and tok.size < codebook_size:
        raise CheckpointError(
            f"{path}: tokenizer has {tok.size} codes, the checkpoint's config needs {codebook_size}"
        )
    tok.load_state_dict({k: _tensor(sf, k, path).float() for k in want})
    tok.eval()
    return tok


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
    for key in ("class_embedding", "qkv_bias", "o_bias"):
        if key in d and not isinstance(d[key], bool):
            raise CheckpointError(f"{where}: {key} is {d[key]!r}, it must be true or false")
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


def load_checkpoint(
    path: str | Path | None = None,
) -> tuple[ARVideoTransformer, PatchVQ | FSQTokenizer, dict[str, Any]]:
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
        qkv_bias=cfg.qkv_bias,
        o_bias=cfg.o_bias,
    )
    vq = load_tokenizer(tokenizer_path(path), codebook_size=cfg.codebook_size)
    return model, vq, info
