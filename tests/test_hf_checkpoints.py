"""Hugging Face Llama-family checkpoints (config.json + safetensors shards) as ``trace.checkpoint``.

Golden values: ``transformers`` is not installed here, so the reference logits come from
:func:`reference_logits` below, a direct float64 transcription of Hugging Face's ``LlamaForCausalLM``
forward pass (``modeling_llama.py``: RMSNorm in float, rotate-half RoPE with ``inv_freq = theta^(-2i/d)``,
GQA by repeating each KV head, causal softmax attention, SwiGLU; Qwen2's q/k/v biases and Llama's
``attention_bias``), written independently of ``models/transformer.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from cosim.cli import main
from cosim.traces import read_trace
from models.checkpoint import CheckpointError, load_hf_checkpoint, load_hf_llama, read_hf_config
from models.fastcar import SamplingOptions, decode

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DIMS = {"layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2, "mlp_hidden": 64, "vocab": 24}


def hf_config(**changes) -> dict:
    """A tiny Llama config.json; a change to None drops the field."""
    cfg = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": DIMS["hidden"],
        "num_hidden_layers": DIMS["layers"],
        "num_attention_heads": DIMS["heads"],
        "num_key_value_heads": DIMS["kv_heads"],
        "intermediate_size": DIMS["mlp_hidden"],
        "vocab_size": DIMS["vocab"],
        "max_position_embeddings": 64,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "attention_bias": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "transformers_version": "4.46.0",
    }
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if v is not None}


def random_tensors(cfg: dict, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random weights of the model ``cfg`` describes, in HF names (large enough that every part matters)."""
    g = torch.Generator().manual_seed(seed)
    h, v, m = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    kvh = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or h // heads
    qwen = cfg["model_type"] == "qwen2"
    bias_qkv = qwen or cfg.get("attention_bias", False)
    bias_o = cfg.get("attention_bias", False) and not qwen

    def w(*shape: int, scale: float = 0.25) -> torch.Tensor:
        return (torch.randn(shape, generator=g) * scale).to(dtype)

    def norm() -> torch.Tensor:
        return (1 + torch.randn(h, generator=g) * 0.1).to(dtype)

    t = {"model.embed_tokens.weight": w(v, h, scale=1.0), "model.norm.weight": norm()}
    if not cfg.get("tie_word_embeddings", False):
        t["lm_head.weight"] = w(v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm()
        t[p + "post_attention_layernorm.weight"] = norm()
        t[p + "self_attn.q_proj.weight"] = w(heads * hd, h)
        t[p + "self_attn.k_proj.weight"] = w(kvh * hd, h)
        t[p + "self_attn.v_proj.weight"] = w(kvh * hd, h)
        t[p + "self_attn.o_proj.weight"] = w(h, heads * hd)
        if bias_qkv:
            t[p + "self_attn.q_proj.bias"] = w(heads * hd, scale=0.5)
            t[p + "self_attn.k_proj.bias"] = w(kvh * hd, scale=0.5)
            t[p + "self_attn.v_proj.bias"] = w(kvh * hd, scale=0.5)
        if bias_o:
            t[p + "self_attn.o_proj.bias"] = w(h, scale=0.5)
        t[p + "mlp.gate_proj.weight"] = w(m, h)
        t[p + "mlp.up_proj.weight"] = w(m, h)
        t[p + "mlp.down_proj.weight"] = w(h, m)
    return t


def write_hf(
    directory: Path, cfg: dict, tensors: dict[str, torch.Tensor], shards: int = 1, index: bool = True
) -> Path:
    """A Hugging Face checkpoint directory: config.json, the shards and (sharded) their index."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    keys = list(tensors)
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[s::shards]
        save_file({k: tensors[k] for k in part}, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    if index:
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
        )
    return directory


def reference_logits(t: dict[str, torch.Tensor], cfg: dict, ids: list[int]) -> torch.Tensor:
    """Hugging Face LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM logits, float64, by hand."""
    t = {k: v.double() for k, v in t.items()}
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    heads = cfg["num_attention_heads"]
    kvh = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or cfg["hidden_size"] // heads
    n = len(ids)

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        y = x @ t[name + ".weight"].T
        return y + t[name + ".bias"] if name + ".bias" in t else y

    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    freqs = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()

    def rope(x: torch.Tensor) -> torch.Tensor:  # (heads, n, hd)
        half = torch.cat([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
        return x * cos + half * sin

    x = t["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((n, n), -math.inf, dtype=torch.float64).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q = rope(linear(h, p + "self_attn.q_proj").view(n, heads, hd).transpose(0, 1))
        k = rope(linear(h, p + "self_attn.k_proj").view(n, kvh, hd).transpose(0, 1))
        v = linear(h, p + "self_attn.v_proj").view(n, kvh, hd).transpose(0, 1)
        k = k.repeat_interleave(heads // kvh, 0)  # query head j reads KV head j // (heads / kvh)
        v = v.repeat_interleave(heads // kvh, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1) @ v
        x = x + linear(att.transpose(0, 1).reshape(n, heads * hd), p + "self_attn.o_proj")
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        gate, up = linear(h, p + "mlp.gate_proj"), linear(h, p + "mlp.up_proj")
        x = x + linear(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj")
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return rms(x, t["model.norm.weight"]) @ head.T


IDS = [23, 3, 17, 0, 9, 9, 12, 5, 21, 2, 14, 7]

VARIANTS = {
    "llama": {},
    "llama-eps": {"rms_norm_eps": 0.3},
    "llama-attention-bias": {"attention_bias": True, "rope_theta": 500000.0},
    "llama-head-dim-mha": {"head_dim": 16, "num_key_value_heads": None, "rms_norm_eps": 1e-6},
    "qwen2-tied": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "attention_bias": None,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "sliding_window": 4,  # not used: use_sliding_window is false
        "max_window_layers": 2,
    },
    "mistral": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "attention_bias": None,
        "sliding_window": None,
        "head_dim": 8,
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_equal_the_reference(tmp_path, variant):
    """The forward pass and the KV-cache decode a capture runs both give Hugging Face's logits."""
    cfg = hf_config(**VARIANTS[variant])
    tensors = random_tensors(cfg)
    model, hf = load_hf_checkpoint(write_hf(tmp_path / "m", cfg, tensors), frames=3, tokens_per_frame=4)
    ref = reference_logits(tensors, cfg, IDS).float()
    with torch.no_grad():
        got = model(torch.tensor([IDS]))[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # decode: prompt token of class 0 (id vocab - 2 with one class), then the sampled tokens fed back
    res = decode(model, [0], sampling=SamplingOptions(cfg=False, temperature=0), keep_logits=True)
    ids = [model.config.class_token_base, *res.tokens[0, :-1].tolist()]
    assert ids[0] == DIMS["vocab"] - 2
    ref = reference_logits(tensors, cfg, ids)[:, : model.config.codebook_size].float()
    torch.testing.assert_close(res.logits[0], ref, rtol=1e-4, atol=1e-4)
    assert (hf.qkv_bias, hf.o_bias) == {
        "llama-attention-bias": (True, True),
        "qwen2-tied": (True, False),
    }.get(variant, (False, False))


def test_rms_norm_eps_is_honoured(tmp_path):
    """With rms_norm_eps 0.3 the logits are the reference's at 0.3, far from those at the default eps."""
    cfg = hf_config(rms_norm_eps=0.3)
    tensors = random_tensors(cfg, seed=3)
    model, _ = load_hf_checkpoint(write_hf(tmp_path / "m", cfg, tensors), frames=3, tokens_per_frame=4)
    assert {m.eps for m in model.modules() if hasattr(m, "eps")} == {0.3}
    with torch.no_grad():
        got = model(torch.tensor([IDS]))[0].double()
    assert (got - reference_logits(tensors, cfg, IDS)).abs().max() < 1e-4
    assert (got - reference_logits(tensors, {**cfg, "rms_norm_eps": 1e-6}, IDS)).abs().max() > 0.05


def test_dims_and_settings_come_from_config(tmp_path):
    cfg = hf_config(
        num_hidden_layers=3,
        hidden_size=48,
        num_attention_heads=6,
        num_key_value_heads=3,
        intermediate_size=80,
    )
    cfg.update(vocab_size=30, rope_theta=20000.0, rms_norm_eps=1e-6)
    path = write_hf(tmp_path / "m", cfg, random_tensors(cfg), shards=2)
    model, hf = load_hf_checkpoint(path, frames=2, tokens_per_frame=9, num_classes=3)
    d = model.config.dims
    assert (d.layers, d.hidden, d.heads, d.kv_heads, d.head_dim, d.mlp_hidden, d.vocab) == (
        3,
        48,
        6,
        3,
        8,
        80,
        30,
    )
    c = model.config
    assert (c.rope_theta, c.norm_eps, c.frames, c.tokens_per_frame) == (20000.0, 1e-6, 2, 9)
    assert (c.num_classes, c.codebook_size, c.uncond_token) == (3, 26, 29)  # prompt tokens at the end
    assert hf.file == path / "config.json" and hf.max_positions == 64 and hf.model_type == "llama"


def test_missing_fields_take_transformers_defaults(tmp_path):
    cfg = hf_config(
        num_key_value_heads=None,
        rms_norm_eps=None,
        rope_theta=None,
        tie_word_embeddings=None,
        hidden_act=None,
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    hf = read_hf_config(tmp_path)
    assert (hf.dims.kv_heads, hf.norm_eps, hf.rope_theta, hf.tie_word_embeddings) == (4, 1e-6, 10000.0, False)


def test_weights_are_read_per_tensor_in_any_float_dtype(tmp_path):
    """bf16 weights become exactly their fp32 values; ``dtype=None`` keeps bf16; a tied head is shared."""
    cfg = hf_config(tie_word_embeddings=True)
    tensors = random_tensors(cfg, dtype=torch.bfloat16)
    path = write_hf(tmp_path / "m", cfg, tensors, shards=3, index=False)
    model, _ = load_hf_checkpoint(path, frames=3, tokens_per_frame=4)
    for key, value in tensors.items():
        assert torch.equal(model.state_dict()[key], value.float()), key
    assert model.lm_head.weight is model.model.embed_tokens.weight
    stored = load_hf_llama(
        path, model.config.dims, num_classes=1, frames=3, tokens_per_frame=4, dtype=None, norm_eps=1e-5
    )
    assert {p.dtype for p in stored.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert torch.isfinite(stored(torch.tensor([IDS]))).all()


# -- through the CLI ---------------------------------------------------------------------------------


def workload(checkpoint: Path, **model) -> dict:
    return {
        "version": 1,
        "name": "hfcap",
        "model": {"name": "hf-tiny", **DIMS, **model},
        "video": {"frames": 2, "tokens_per_frame": 4, "prompts": 1, "cfg": True},
        "trace": {"source": "capture", "checkpoint": str(checkpoint)},
        "policy": {"kind": "tas", "target_replay_ratio": 0.4},
        "hardware": {"preset": "kv260"},
        "outputs": {"report": False, "timeline_steps": 1},
    }


def write_workload(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_captures_from_a_sharded_directory(tmp_path):
    cfg = hf_config()
    ckpt = write_hf(tmp_path / "llama", cfg, random_tensors(cfg), shards=2)
    w = write_workload(tmp_path, workload(ckpt))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "capture", str(w), "--out", str(tmp_path / "cap")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    trace = read_trace(tmp_path / "cap" / "trace.parquet")
    m = trace.meta
    assert (m.layers, m.frames, m.tokens_per_frame, m.batch) == (2, 2, 4, 2)
    assert m.source == "captured" and m.source_detail == Path(ckpt).name
    assert m.model["hidden"] == 32 and m.model["kv_heads"] == 2
    quality = json.loads((tmp_path / "cap" / "quality.json").read_text())
    assert quality["psnr_db"] is None and quality["ssim"] is None  # no visual tokenizer in an HF model
    assert 0 < quality["replay_ratio"] < 0.5 and 0 <= quality["token_agreement"] <= 1


def test_cli_runs_from_a_single_file(tmp_path):
    cfg = hf_config(model_type="qwen2", attention_bias=None, tie_word_embeddings=True)
    ckpt = write_hf(tmp_path / "qwen", cfg, random_tensors(cfg)) / "model.safetensors"
    w = write_workload(tmp_path, workload(ckpt))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(w), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trace_is_real"] and summary["trace_label"] == "captured from qwen/model.safetensors"
    assert summary["quality"]["psnr_db"] is None


def cli_error(tmp_path: Path, capsys, raw: dict, command: str = "capture") -> str:
    """Run the CLI in-process on a workload that must be refused: exit 2, one line, nothing written."""
    before = sorted(p for p in tmp_path.rglob("*"))
    w = write_workload(tmp_path, raw)
    code = main([command, str(w), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert sorted(p for p in tmp_path.rglob("*") if p != w) == before  # nothing written
    return lines[0]


@pytest.mark.parametrize(
    "model, fragment",
    [
        ({"layers": 3}, "model.layers: 3 does not match the checkpoint's num_hidden_layers = 2 in "),
        ({"hidden": 64}, "model.hidden: 64 does not match the checkpoint's hidden_size = 32"),
        ({"kv_heads": 4}, "model.kv_heads: 4 does not match the checkpoint's num_key_value_heads = 2"),
        ({"head_dim": 16}, "model.head_dim: 16 does not match the checkpoint's head_dim = 8"),
        ({"mlp_hidden": 96}, "model.mlp_hidden: 96 does not match the checkpoint's intermediate_size = 64"),
        ({"vocab": 16384}, "model.vocab: 16384 does not match the checkpoint's vocab_size = 24"),
        ({"mlp_kind": "gelu"}, "model.mlp_kind: gelu does not match the checkpoint's hidden_act = silu"),
    ],
)
def test_workload_dims_must_match_config(tmp_path, capsys, model, fragment):
    cfg = hf_config()
    ckpt = write_hf(tmp_path / "m", cfg, random_tensors(cfg))
    line = cli_error(tmp_path, capsys, workload(ckpt, **model))
    assert fragment in line and str(ckpt / "config.json") in line, line


SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"rope_scaling": SCALING}, "rope_scaling is {'rope_type': 'llama3'"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling is {'type': 'linear'"),
        (
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
            "rope_parameters is {'rope_type': 'yarn'",
        ),
        ({"hidden_act": "gelu"}, "hidden_act is 'gelu', only silu"),
        ({"model_type": "gemma"}, "model_type is 'gemma', not a supported Llama-family decoder"),
        ({"model_type": "qwen3"}, "model_type is 'qwen3'"),
        ({"model_type": None}, "model_type is missing"),
        ({"mlp_bias": True}, "mlp_bias is True, MLP biases are not supported"),
        ({"sliding_window": 4}, "sliding_window: a field this loader does not know for model_type llama"),
        (
            {"model_type": "mistral", "attention_bias": None, "sliding_window": 4},
            "sliding_window is 4, shorter than the 8 positions decoded",
        ),
        (
            {"model_type": "qwen2", "attention_bias": None, "use_sliding_window": True, "sliding_window": 6},
            "sliding_window is 6, shorter than the 8 positions decoded",
        ),
        ({"layer_types": ["full_attention", "sliding_attention"]}, "sliding_window is null"),
        ({"max_position_embeddings": 6}, "max_position_embeddings is 6, fewer than the 8 positions"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config: quantized weights"),
        ({"auto_map": {"AutoModelForCausalLM": "x.Y"}}, "auto_map: the model's own code"),
        ({"logit_scale": 2.0}, "logit_scale: a field this loader does not know"),
        ({"rms_norm_eps": -1}, "rms_norm_eps is -1, it must be a positive number"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings is 'no', it must be true or false"),
    ],
)
def test_unsupported_config_fields_are_refused(tmp_path, capsys, changes, fragment):
    ckpt = write_hf(tmp_path / "m", hf_config(**changes), random_tensors(hf_config()))
    line = cli_error(tmp_path, capsys, workload(ckpt))
    assert line.startswith(f"error: trace.checkpoint: {ckpt / 'config.json'}: "), line
    assert fragment in line, line


def test_a_window_no_shorter_than_the_video_is_exact(tmp_path):
    """A sliding window that covers every decoded position changes nothing: accepted; a shorter one is not.
    Without the field, Mistral's window is transformers' default, 4096."""
    cfg = hf_config(model_type="mistral", attention_bias=None, sliding_window=8)
    ckpt = write_hf(tmp_path / "m", cfg, random_tensors(cfg))
    model, hf = load_hf_checkpoint(ckpt, frames=2, tokens_per_frame=4)
    assert hf.window == 8 and model.config.dims.layers == 2
    with pytest.raises(CheckpointError, match="sliding_window is 8, shorter than the 9 positions"):
        load_hf_checkpoint(ckpt, frames=3, tokens_per_frame=3)
    (ckpt / "config.json").write_text(json.dumps(hf_config(model_type="mistral", attention_bias=None)))
    assert read_hf_config(ckpt).window == 4096


def _drop_config(d: Path) -> None:
    (d / "config.json").unlink()


def _drop_shards(d: Path) -> None:
    for f in d.glob("*.safetensors*"):
        f.unlink()


def _drop_tensor_from_shard(d: Path) -> None:
    from safetensors import safe_open

    shard = d / "model-00002-of-00002.safetensors"
    with safe_open(str(shard), framework="pt") as sf:
        kept = {k: sf.get_tensor(k) for k in sf.keys() if k != "model.layers.1.mlp.up_proj.weight"}  # noqa: SIM118
    save_file(kept, str(shard))


def _drop_shard(d: Path) -> None:
    (d / "model-00001-of-00002.safetensors").unlink()


def _corrupt_config(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 32,\n  oops}')


def _config_list(d: Path) -> None:
    (d / "config.json").write_text("[1, 2]")


def _bad_dim(d: Path) -> None:
    (d / "config.json").write_text(json.dumps(hf_config(hidden_size="32")))


def _missing_dim(d: Path) -> None:
    (d / "config.json").write_text(json.dumps(hf_config(intermediate_size=None)))


def _indivisible_heads(d: Path) -> None:
    (d / "config.json").write_text(json.dumps(hf_config(num_attention_heads=3, num_key_value_heads=3)))


def _corrupt_index(d: Path) -> None:
    (d / "model.safetensors.index.json").write_text("{")


def _extra_tensor(d: Path) -> None:
    save_file({"model.layers.0.self_attn.q_norm.weight": torch.ones(8)}, str(d / "extra.safetensors"))
    (d / "model.safetensors.index.json").unlink()


def _truncated_shard(d: Path) -> None:
    shard = d / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])


def _nan_weight(d: Path) -> None:
    from safetensors import safe_open

    shard = d / "model-00001-of-00002.safetensors"
    with safe_open(str(shard), framework="pt") as sf:
        t = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118
    t["model.embed_tokens.weight"][3, 5] = float("nan")
    save_file(t, str(shard))


@pytest.mark.parametrize(
    "break_it, where, fragment",
    [
        (None, "nowhere", "checkpoint not found"),
        (_drop_config, "config.json", "not found (a Hugging Face checkpoint directory needs it"),
        (_drop_shards, "", "no *.safetensors checkpoint in this directory"),
        (
            _drop_tensor_from_shard,
            "model-00002-of-00002.safetensors",
            "tensor model.layers.1.mlp.up_proj.weight is missing (model.safetensors.index.json puts it",
        ),
        (_drop_shard, "model-00001-of-00002.safetensors", "shard not found (listed in model.safetensors"),
        (_corrupt_config, "config.json", "not valid JSON (Expecting property name"),
        (_config_list, "config.json", "a JSON list, not an object"),
        (_bad_dim, "config.json", "hidden_size is '32', it must be a positive integer"),
        (_missing_dim, "config.json", "intermediate_size is missing"),
        (_indivisible_heads, "config.json", "hidden_size (32) is not divisible by num_attention_heads (3)"),
        (_corrupt_index, "model.safetensors.index.json", "not valid JSON"),
        (_extra_tensor, "extra.safetensors", "tensor model.layers.0.self_attn.q_norm.weight is not part of"),
        (_truncated_shard, "model-00001-of-00002.safetensors", "not a valid safetensors file"),
        (_nan_weight, "model-00001-of-00002.safetensors", "holds NaN or infinite values"),
    ],
)
def test_bad_checkpoints_exit_2_naming_the_file(tmp_path, capsys, break_it, where, fragment):
    cfg = hf_config()
    ckpt = write_hf(tmp_path / "m", cfg, random_tensors(cfg), shards=2)
    if break_it is None:
        ckpt = tmp_path / "nowhere"
    else:
        break_it(ckpt)
    line = cli_error(tmp_path, capsys, workload(ckpt))
    named = ckpt / where if where and break_it is not None else ckpt
    assert line.startswith(f"error: trace.checkpoint: {named}: "), line
    assert fragment in line, line


def test_single_file_without_config_is_refused(tmp_path, capsys):
    cfg = hf_config()
    ckpt = write_hf(tmp_path / "m", cfg, random_tensors(cfg)) / "model.safetensors"
    (tmp_path / "m" / "config.json").unlink()
    line = cli_error(tmp_path, capsys, workload(ckpt), command="run")
    assert line.startswith(f"error: trace.checkpoint: {tmp_path / 'm' / 'config.json'}: not found"), line
    assert "model.safetensors has no fastcar.config metadata" in line, line


def test_too_many_prompts_for_the_vocabulary(tmp_path, capsys):
    cfg = hf_config()
    ckpt = write_hf(tmp_path / "m", cfg, random_tensors(cfg))
    raw = workload(ckpt)
    raw["trace"]["classes"] = [0, 30]
    raw["video"]["prompts"] = 2
    line = cli_error(tmp_path, capsys, raw)
    assert "vocab_size is 24: no ids left for video tokens after 31 class token(s)" in line, line


def test_one_shard_of_a_sharded_checkpoint_is_refused(tmp_path, capsys):
    cfg = hf_config()
    ckpt = write_hf(tmp_path / "m", cfg, random_tensors(cfg), shards=2) / "model-00001-of-00002.safetensors"
    line = cli_error(tmp_path, capsys, workload(ckpt))
    assert line.startswith(f"error: trace.checkpoint: {ckpt}: one shard of a sharded checkpoint"), line
