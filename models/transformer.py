"""A Llama-style decoder over discrete visual tokens (RMSNorm, RoPE, SwiGLU, GQA, KV cache).

The module layout and parameter names follow Hugging Face's ``LlamaForCausalLM`` so real Llama-family
weights load 1:1 (see :mod:`models.checkpoint`). RoPE uses the same "rotate half" convention as HF, so no
weight permutation is needed.

Token layout of a video sequence (VILA-U style, no separators): position 0 holds the prompt token (a class
token, or the unconditional token for the CFG copy), position ``s >= 1`` holds visual token ``s - 1``.
Decode step ``s`` processes position ``s`` and predicts visual token ``s``; it is aligned with step
``s - N`` one frame earlier (N tokens per frame), which is what FastCar's TAS compares.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.dims import ModelDims


@dataclass
class ARConfig:
    """The transformer plus its token layout. ``dims.vocab`` counts codes + class tokens + 1 (uncond)."""

    dims: ModelDims
    codebook_size: int
    num_classes: int
    frames: int = 8
    tokens_per_frame: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    class_embedding: bool = False  # add a learned class vector to every position (not in HF Llama)
    qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2; Llama with attention_bias)
    o_bias: bool = False  # a bias on the output projection (Llama with attention_bias)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.dims, dict):
            self.dims = ModelDims(**self.dims)
        need = self.codebook_size + self.num_classes + 1
        if self.dims.vocab < need:
            raise ValueError(f"dims.vocab={self.dims.vocab} < codebook + classes + 1 = {need}")

    @property
    def class_token_base(self) -> int:
        return self.codebook_size

    @property
    def uncond_token(self) -> int:
        return self.codebook_size + self.num_classes

    @property
    def seq_len(self) -> int:
        """Positions fed to the model for a whole video (prompt + all visual tokens but the last)."""
        return self.frames * self.tokens_per_frame

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dims"] = self.dims.model_dump()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ARConfig:
        d = dict(d)
        d["dims"] = ModelDims(**d["dims"])
        return cls(**d)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight


def rope_tables(head_dim: int, positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (positions, head_dim) in HF's rotate-half layout."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(positions, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (..., T, head_dim); cos/sin broadcastable (T, head_dim)."""
    return x * cos + rotate_half(x) * sin


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    def __init__(self, dims: ModelDims, qkv_bias: bool = False, o_bias: bool = False) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = dims.heads, dims.kv_heads, dims.head_dim
        self.q_proj = nn.Linear(dims.hidden, dims.q_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dims.hidden, dims.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dims.hidden, dims.kv_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(dims.q_dim, dims.hidden, bias=o_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Full causal self-attention (training / teacher forcing)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos[:t], sin[:t]), apply_rope(k, cos[:t], sin[:t])
        rep = self.heads // self.kv_heads
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class DecoderLayer(nn.Module):
    def __init__(self, dims: ModelDims, eps: float, qkv_bias: bool = False, o_bias: bool = False) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dims.hidden, eps)
        self.self_attn = Attention(dims, qkv_bias, o_bias)
        self.post_attention_layernorm = RMSNorm(dims.hidden, eps)
        self.mlp = SwiGLU(dims.hidden, dims.mlp_hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


def _embedding(rows: int, dim: int, init: bool) -> nn.Embedding:
    """An embedding table, randomly initialised or (``init=False``) only allocated."""
    return nn.Embedding(rows, dim) if init else nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class LlamaBody(nn.Module):
    """HF's ``model.`` prefix: embeddings, layers, final norm."""

    def __init__(
        self, dims: ModelDims, eps: float, qkv_bias: bool = False, o_bias: bool = False, init: bool = True
    ) -> None:
        super().__init__()
        self.embed_tokens = _embedding(dims.vocab, dims.hidden, init)
        self.layers = nn.ModuleList(DecoderLayer(dims, eps, qkv_bias, o_bias) for _ in range(dims.layers))
        self.norm = RMSNorm(dims.hidden, eps)


class ARVideoTransformer(nn.Module):
    """Class-conditioned AR video decoder. ``forward`` is the teacher-forced pass used in training;
    token-by-token decoding with a KV cache and FastCar replay lives in :mod:`models.fastcar`."""

    def __init__(self, config: ARConfig, *, init: bool = True) -> None:
        """``init=False``: no random init and no RoPE tables (for :meth:`empty`, which fills them in)."""
        super().__init__()
        if config.dims.mlp_kind != "swiglu":
            raise ValueError("only the SwiGLU MLP (Llama) is implemented")
        self.config = config
        d = config.dims
        self.model = LlamaBody(d, config.norm_eps, config.qkv_bias, config.o_bias, init)
        self.lm_head = nn.Linear(d.hidden, d.vocab, bias=False)
        # Optional: conditioning through the prompt token alone is learned slowly by a small model
        # trained briefly; a per-position class vector (row num_classes = unconditional) makes it direct.
        self.class_embed = (
            _embedding(config.num_classes + 1, d.hidden, init) if config.class_embedding else None
        )
        if init:
            cos, sin = rope_tables(d.head_dim, max(config.seq_len, 1) + 1, config.rope_theta)
        else:  # empty() computes them once the module is allocated
            cos = sin = torch.empty(0)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if init:
            self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @classmethod
    def empty(cls, config: ARConfig, dtype: torch.dtype = torch.float32) -> ARVideoTransformer:
        """The module with its parameters allocated in ``dtype`` but not initialised (no random init, no
        temporary copy) and its RoPE tables computed: for a loader that fills every parameter itself.
        Built on the meta device, then allocated parameter by parameter; no random init, RoPE table or
        ``empty_like`` ever runs on a meta tensor (that would load PyTorch's Python meta kernels: 0.8 s
        and 70 MB, once per process)."""
        with torch.device("meta"):
            model = cls(config, init=False)
        for m in model.modules():  # not to_empty(), which uses empty_like
            for name, p in list(m.named_parameters(recurse=False)):
                m.register_parameter(name, nn.Parameter(torch.empty(p.shape, dtype=dtype)))
        d = config.dims
        cos, sin = rope_tables(d.head_dim, max(config.seq_len, 1) + 1, config.rope_theta)
        model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)
        return model

    def ensure_rope(self, positions: int) -> None:
        """Grow the RoPE tables when decoding longer than the training length."""
        if self.rope_cos.shape[0] < positions:
            d = self.config.dims
            cos, sin = rope_tables(d.head_dim, positions, self.config.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos), sin.to(self.rope_sin)

    def input_ids(self, labels: torch.Tensor, video_tokens: torch.Tensor) -> torch.Tensor:
        """(B,) class ids (-1 = unconditional) and (B, T*N) codes -> (B, T*N) model inputs."""
        prompt = torch.where(
            labels < 0,
            torch.full_like(labels, self.config.uncond_token),
            labels + self.config.class_token_base,
        )
        return torch.cat([prompt[:, None], video_tokens[:, :-1]], dim=1)

    def class_vector(self, labels: torch.Tensor) -> torch.Tensor | None:
        """(B,) class ids (-1 = unconditional) -> (B, hidden) added to every input, or None."""
        if self.class_embed is None:
            return None
        idx = torch.where(labels < 0, torch.full_like(labels, self.config.num_classes), labels)
        return self.class_embed(idx.to(self.class_embed.weight.device))

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, vocab); position s predicts visual token s."""
        t = ids.shape[1]
        self.ensure_rope(t)
        x = self.model.embed_tokens(ids)
        if self.class_embed is not None:
            if labels is None:
                raise ValueError("this model adds a class vector to every position: pass labels")
            x = x + self.class_vector(labels)[:, None]
        for layer in self.model.layers:
            x = layer(x, self.rope_cos, self.rope_sin)
        return self.lm_head(self.model.norm(x))

    @property
    def cfg(self) -> ARConfig:
        """Alias of ``config`` (the simulator side reads ``model.cfg``)."""
        return self.config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def tiny_dims(**overrides: Any) -> ModelDims:
    """The shipped tiny model's shape (see docs/model_card.md)."""
    base = dict(
        name="fastcar-tiny",
        layers=6,
        hidden=128,
        heads=4,
        kv_heads=2,
        mlp_hidden=384,
        mlp_kind="swiglu",
        vocab=256 + 8 + 1,
        source="models/checkpoints/fastcar_tiny.safetensors (trained by models/train.py)",
    )
    base.update(overrides)
    return ModelDims(**base)


def head_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
