"""Unusable checkpoints and tokenizers are bad input: one CheckpointError naming the file and the reason,
and exit code 2 with one ``error:`` line from the CLI, never a traceback."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_workload import TINY_CAPTURE

from cosim.errors import InputError
from models.checkpoint import (
    CONFIG_KEY,
    DEFAULT_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    load_hf_llama,
    load_tokenizer,
    tokenizer_path,
)

pytestmark = [
    pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped checkpoint missing"),
    pytest.mark.usefixtures("single_torch_thread"),
]

UP = "model.layers.3.mlp.up_proj.weight"


def shipped_copy(tmp_path: Path) -> Path:
    """The shipped checkpoint and its tokenizer, copied side by side into tmp_path."""
    path = tmp_path / DEFAULT_CHECKPOINT.name
    shutil.copy(DEFAULT_CHECKPOINT, path)
    shutil.copy(tokenizer_path(DEFAULT_CHECKPOINT), tokenizer_path(path))
    return path


def read_all(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as sf:
        return {k: sf.get_tensor(k) for k in sf.keys()}, dict(sf.metadata() or {})  # noqa: SIM118


def rewrite(path: Path, tensors=None, meta=None, **changes) -> Path:
    """Rewrite a checkpoint with some tensors or metadata changed (``None`` drops a tensor/key)."""
    old_t, old_m = read_all(path)
    t = {**old_t, **(tensors or {})}
    m = {**old_m, **(meta or {})}
    save_file(
        {k: v for k, v in t.items() if v is not None},
        str(path),
        metadata={k: v for k, v in m.items() if v is not None},
    )
    return path


def config_of(path: Path) -> dict:
    return json.loads(read_all(path)[1][CONFIG_KEY])


def header_len(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_the_shipped_copy_loads(tmp_path):
    model, vq, info = load_checkpoint(shipped_copy(tmp_path))
    assert model.config.dims.layers == 6 and vq.size == 512 and "val_loss" in info


def test_error_is_bad_input():
    assert issubclass(CheckpointError, InputError)


@pytest.mark.parametrize("keep", [0, 4, 8, 100, 7000, 1_000_000, -1])
def test_truncated_checkpoint(tmp_path, keep):
    path = shipped_copy(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=f"^{path}: not a valid safetensors file"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_hf_llama(path, load_checkpoint(DEFAULT_CHECKPOINT)[0].config.dims)


def test_flipped_header_bytes(tmp_path):
    """Flip single header bytes all over the header (length, JSON syntax, key names, shapes, offsets, the
    config metadata): whatever breaks is a CheckpointError naming the file."""
    src = shipped_copy(tmp_path)
    data = bytearray(src.read_bytes())
    end = 8 + header_len(src)
    positions = [0, 3, 7, 8, 9, *range(20, end, 97), end - 2, end - 1]
    failures = 0
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        src.write_bytes(bad)
        try:
            load_checkpoint(src)
        except CheckpointError as exc:
            assert str(exc).startswith(f"{src}: ") and "\n" not in str(exc), str(exc)
            failures += 1
    assert failures == len(positions)  # 0xFF is never valid UTF-8: every flip corrupts the header


def test_flipped_data_bytes_giving_nan(tmp_path):
    path = shipped_copy(tmp_path)
    data = bytearray(path.read_bytes())
    start = 8 + header_len(path)
    data[start + 2 : start + 4] = b"\xc0\x7f"  # the first float of the first tensor becomes NaN
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)


def test_missing_tensor(tmp_path):
    path = rewrite(shipped_copy(tmp_path), tensors={UP: None})
    with pytest.raises(CheckpointError, match=f"^{path}: tensor {UP} is missing"):
        load_checkpoint(path)


def test_missing_class_embedding(tmp_path):
    path = rewrite(shipped_copy(tmp_path), tensors={"fastcar.class_embed.weight": None})
    with pytest.raises(CheckpointError, match="tensor fastcar.class_embed.weight is missing"):
        load_checkpoint(path)


def test_reshaped_tensor(tmp_path):
    path = shipped_copy(tmp_path)
    up = read_all(path)[0][UP]
    rewrite(path, tensors={UP: up.reshape(192, 256).contiguous()})
    msg = f"^{path}: tensor {UP} has shape \\(192, 256\\), the config needs \\(384, 128\\)$"
    with pytest.raises(CheckpointError, match=msg):
        load_checkpoint(path)


def test_integer_tensor(tmp_path):
    path = shipped_copy(tmp_path)
    up = read_all(path)[0][UP]
    rewrite(path, tensors={UP: up.to(torch.int32)})
    with pytest.raises(CheckpointError, match=f"tensor {UP} has dtype I32"):
        load_checkpoint(path)


def test_config_disagreeing_with_the_tensors(tmp_path):
    path = shipped_copy(tmp_path)
    cfg = config_of(path)
    cfg["dims"]["mlp_hidden"] = 512
    rewrite(path, meta={CONFIG_KEY: json.dumps(cfg)})
    with pytest.raises(
        CheckpointError, match=r"mlp.gate_proj.weight has shape \(384, 128\), the config needs \(512, 128\)"
    ):
        load_checkpoint(path)


def _cfg_edit(key, value):
    def edit(cfg: dict) -> dict:
        target = cfg["dims"] if key.startswith("dims.") else cfg
        name = key.removeprefix("dims.")
        if value is None:
            del target[name]
        else:
            target[name] = value
        return cfg

    return edit


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("{not json", "fastcar.config is not valid JSON"),
        ("", "fastcar.config is not valid JSON"),
        ("[1, 2]", "is a JSON list, not an object"),
        ('"text"', "is a JSON str, not an object"),
        (_cfg_edit("dims", None), "missing key 'dims'"),
        (_cfg_edit("codebook_size", None), "missing key 'codebook_size'"),
        (_cfg_edit("dims", [1, 2]), "dims is not an object"),
        (_cfg_edit("dims.layers", "six"), "dims.layers: "),
        (_cfg_edit("dims.layers", -1), "dims.layers: "),
        (_cfg_edit("dims.kv_heads", 3), "must be a multiple of kv_heads"),
        (_cfg_edit("dims.hidden", 130), "the config needs (521, 130)"),
        (_cfg_edit("dims.mlp_kind", "gelu"), "only the SwiGLU MLP"),
        (_cfg_edit("dims.bogus", 1), "dims.bogus"),
        (_cfg_edit("bogus", 1), "unknown key 'bogus'"),
        (_cfg_edit("codebook_size", "512"), "codebook_size is '512', it must be a positive integer"),
        (_cfg_edit("codebook_size", 600), "dims.vocab=521 < codebook"),
        (_cfg_edit("frames", 0), "frames is 0"),
        (_cfg_edit("frames", 10**9), "exceeds"),
        (_cfg_edit("tokens_per_frame", 60), "not a square grid"),
        (_cfg_edit("rope_theta", -1.0), "rope_theta is -1.0"),
        (_cfg_edit("class_embedding", "yes"), "class_embedding is 'yes'"),
        (_cfg_edit("class_embedding", False), "fastcar.class_embed"),  # ok config; extra tensor ignored
        (_cfg_edit("extra", 3), "extra is not an object"),
        (None, "no fastcar.config metadata"),
    ],
)
def test_bad_config(tmp_path, raw, fragment):
    path = shipped_copy(tmp_path)
    if callable(raw):
        raw = json.dumps(raw(config_of(path)))
    rewrite(path, meta={CONFIG_KEY: raw})
    if fragment == "fastcar.class_embed":  # a consistent config without the class vector still loads
        assert load_checkpoint(path)[0].class_embed is None
        return
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and fragment in msg and "\n" not in msg, msg


def test_bad_info_json(tmp_path):
    path = rewrite(shipped_copy(tmp_path), meta={"fastcar.info": "{oops"})
    with pytest.raises(CheckpointError, match="fastcar.info is not valid JSON"):
        load_checkpoint(path)


def tokenizer_cases():
    def truncate(p: Path) -> None:
        p.write_bytes(p.read_bytes()[:5000])

    def flip(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[12] ^= 0xFF
        p.write_bytes(data)

    def drop(p: Path) -> None:
        p.unlink()

    def no_codebook(p: Path) -> None:
        save_file({"centres": torch.zeros(512, 48)}, str(p), metadata={"patch": "4"})

    def bad_patch(p: Path) -> None:
        save_file({"codebook": torch.zeros(512, 48)}, str(p), metadata={"patch": "four"})

    def no_patch(p: Path) -> None:
        save_file({"codebook": torch.zeros(512, 48)}, str(p))

    def wrong_width(p: Path) -> None:
        save_file({"codebook": torch.zeros(512, 27)}, str(p), metadata={"patch": "4"})

    def too_few_codes(p: Path) -> None:
        save_file({"codebook": torch.zeros(100, 48)}, str(p), metadata={"patch": "4"})

    def nan(p: Path) -> None:
        cb = torch.zeros(512, 48)
        cb[3, 4] = float("nan")
        save_file({"codebook": cb}, str(p), metadata={"patch": "4"})

    return [
        (truncate, "not a valid safetensors file"),
        (flip, "not a valid safetensors file"),
        (drop, "tokenizer not found"),
        (no_codebook, "has no tensor 'codebook'"),
        (bad_patch, "'patch' is 'four'"),
        (no_patch, "'patch' is None"),
        (wrong_width, r"shape (512, 27), patch 4 needs (codes, 48)"),
        (too_few_codes, "has 100 codes, the checkpoint's config needs 512"),
        (nan, "NaN or infinite"),
    ]


@pytest.mark.parametrize("corrupt, fragment", tokenizer_cases())
def test_corrupt_tokenizer(tmp_path, corrupt, fragment):
    path = shipped_copy(tmp_path)
    tok = tokenizer_path(path)
    corrupt(tok)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{tok}: ") and fragment in msg and "\n" not in msg, msg
    if tok.exists():
        with pytest.raises(CheckpointError):
            load_tokenizer(tok, codebook_size=512)


def test_hf_loader_on_bad_shards(tmp_path):
    """``load_hf_llama`` on a directory of shards: a corrupt shard and a duplicated tensor are named."""
    src = shipped_copy(tmp_path)
    tensors, _ = read_all(src)
    dims = load_checkpoint(src)[0].config.dims
    keys = sorted(k for k in tensors if not k.startswith("fastcar."))
    shards = tmp_path / "shards"
    shards.mkdir()
    save_file({k: tensors[k] for k in keys[:20]}, str(shards / "a.safetensors"))
    save_file({k: tensors[k] for k in keys[20:]}, str(shards / "b.safetensors"))
    assert load_hf_llama(shards, dims, num_classes=8).config.dims.layers == 6
    save_file({UP: tensors[UP]}, str(shards / "c.safetensors"))
    with pytest.raises(CheckpointError, match=f"tensor {UP} is also in"):
        load_hf_llama(shards, dims, num_classes=8)
    (shards / "c.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="c.safetensors: not a valid safetensors file"):
        load_hf_llama(shards, dims, num_classes=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_hf_llama(empty, dims)
    with pytest.raises(FileNotFoundError):  # still a FileNotFoundError for older callers
        load_hf_llama(tmp_path / "nope.safetensors", dims)


# -- the CLI: exit 2, one error line, nothing written ------------------------------------------------

WORKLOAD = dict(TINY_CAPTURE, video={"frames": 2, "prompts": 1, "cfg": True})


def run_cli(tmp_path: Path, command: str, checkpoint: Path) -> subprocess.CompletedProcess:
    raw = {**WORKLOAD, "trace": {"source": "capture", "checkpoint": str(checkpoint)}}
    work = tmp_path / "w.yaml"
    work.write_text(yaml.safe_dump(raw))
    return subprocess.run(
        [sys.executable, "-m", "cosim", command, str(work), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def _reshape(p: Path) -> None:
    up = read_all(p)[0][UP]
    rewrite(p, tensors={UP: up.reshape(192, 256).contiguous()})


def _bad_config(p: Path) -> None:
    rewrite(p, meta={CONFIG_KEY: '{"dims": '})


def _bad_tokenizer(p: Path) -> None:
    tok = tokenizer_path(p)
    tok.write_bytes(tok.read_bytes()[:100])


@pytest.mark.parametrize(
    "command, corrupt, fragment",
    [
        ("run", _truncate, "not a valid safetensors file"),
        ("capture", _reshape, f"tensor {UP} has shape (192, 256), the config needs (384, 128)"),
        ("capture", _bad_config, "fastcar.config is not valid JSON"),
        ("run", _bad_tokenizer, "_tokenizer.safetensors: not a valid safetensors file"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path, command, corrupt, fragment):
    path = shipped_copy(tmp_path)
    corrupt(path)
    r = run_cli(tmp_path, command, path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: trace.checkpoint: "), r.stderr
    assert fragment in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
