"""Hugging Face Llama safetensors: key names, round trip, and clear errors on a mismatch."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.checkpoint import (
    CLASS_EMBED_KEY,
    CheckpointError,
    hf_key_map,
    load_checkpoint,
    load_hf_llama,
    save_hf_llama,
)
from models.fastcar import SamplingOptions, decode
from models.testing import tiny_checkpoint, tiny_config, tiny_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_hf_round_trip_preserves_weights_and_outputs(tmp_path):
    model = tiny_model(seed=4)
    path = tmp_path / "m.safetensors"
    save_hf_llama(model, path)
    cfg = model.config
    loaded = load_hf_llama(
        path,
        cfg.dims,
        codebook_size=cfg.codebook_size,
        num_classes=cfg.num_classes,
        frames=cfg.frames,
        tokens_per_frame=cfg.tokens_per_frame,
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    samp = SamplingOptions(seed=2)
    a = decode(model, [0, 1], sampling=samp, keep_logits=True)
    b = decode(loaded, [0, 1], sampling=samp, keep_logits=True)
    assert torch.equal(a.logits, b.logits)


def test_loads_a_foreign_hf_checkpoint_with_extra_keys_tied_head_and_shards(tmp_path):
    """A checkpoint written without our code: HF names only, rotary buffers, no lm_head (tied), 2 shards."""
    cfg = tiny_config()
    d = cfg.dims
    g = torch.Generator().manual_seed(0)
    shapes = {
        "model.embed_tokens.weight": (d.vocab, d.hidden),
        "model.norm.weight": (d.hidden,),
    }
    for i in range(d.layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (d.hidden,),
                p + "post_attention_layernorm.weight": (d.hidden,),
                p + "self_attn.q_proj.weight": (d.q_dim, d.hidden),
                p + "self_attn.k_proj.weight": (d.kv_dim, d.hidden),
                p + "self_attn.v_proj.weight": (d.kv_dim, d.hidden),
                p + "self_attn.o_proj.weight": (d.hidden, d.q_dim),
                p + "mlp.gate_proj.weight": (d.mlp_hidden, d.hidden),
                p + "mlp.up_proj.weight": (d.mlp_hidden, d.hidden),
                p + "mlp.down_proj.weight": (d.hidden, d.mlp_hidden),
                p + "self_attn.rotary_emb.inv_freq": (d.head_dim // 2,),
            }
        )
    tensors = {k: torch.randn(s, generator=g).to(torch.float16) for k, s in shapes.items()}
    keys = sorted(tensors)
    (tmp_path / "ckpt").mkdir()
    save_file(
        {k: tensors[k] for k in keys[: len(keys) // 2]},
        str(tmp_path / "ckpt" / "model-00001-of-00002.safetensors"),
    )
    save_file(
        {k: tensors[k] for k in keys[len(keys) // 2 :]},
        str(tmp_path / "ckpt" / "model-00002-of-00002.safetensors"),
    )
    model = load_hf_llama(tmp_path / "ckpt", d, num_classes=cfg.num_classes)
    sd = model.state_dict()
    assert torch.equal(
        sd["model.layers.1.mlp.up_proj.weight"], tensors["model.layers.1.mlp.up_proj.weight"].float()
    )
    assert torch.equal(sd["lm_head.weight"], tensors["model.embed_tokens.weight"].float())
    assert set(hf_key_map(d.layers)) <= set(sd)


def test_mismatched_dims_name_the_key(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.safetensors"
    save_hf_llama(model, path)
    wrong = model.config.dims.model_copy(update={"mlp_hidden": 48})
    with pytest.raises(ValueError, match="mlp"):
        load_hf_llama(path, wrong, num_classes=3)
    deeper = model.config.dims.model_copy(update={"layers": 3})
    with pytest.raises(CheckpointError, match="model.layers.2"):
        load_hf_llama(path, deeper, num_classes=3)
    with pytest.raises(FileNotFoundError):
        load_hf_llama(tmp_path / "missing.safetensors", model.config.dims)


def test_shipped_layout_loads_model_and_tokenizer(tmp_path):
    path = tiny_checkpoint(tmp_path)
    model, vq, _ = load_checkpoint(path)
    assert model.config.tokens_per_frame == 16 and vq.size == 16
    with safe_open(str(path), framework="pt") as sf:  # our one non-HF tensor comes back too
        assert torch.equal(model.class_embed.weight, sf.get_tensor(CLASS_EMBED_KEY))
    frames = vq.decode(torch.zeros(2, 4, 16, dtype=torch.long))
    assert frames.shape == (2, 4, 16, 16, 3)
