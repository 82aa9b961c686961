"""Transformer dimensions: the one description of a model's shape used by the cost model and PyTorch side.

Kept free of torch so the hardware side can import it cheaply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelDims(BaseModel):
    """Shape of a Llama-style decoder. Defaults are none: every preset states its dims."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("custom", description="model name, for reports")
    layers: int = Field(gt=0, description="decoder layers (the layers replay acts on)")
    hidden: int = Field(gt=0, description="hidden size d_model")
    heads: int = Field(gt=0, description="attention (query) heads")
    kv_heads: int | None = Field(None, gt=0, description="key/value heads (GQA); default = heads")
    head_dim: int | None = Field(None, gt=0, description="per-head dim; default = hidden / heads")
    mlp_hidden: int = Field(gt=0, description="MLP inner size")
    mlp_kind: Literal["swiglu", "gelu"] = Field("swiglu", description="swiglu: 3 matrices; gelu: 2")
    vocab: int = Field(16384, gt=0, description="visual-token vocabulary (output head size)")
    extra_macs_per_token: int = Field(
        0,
        ge=0,
        description="non-LLM work per decode token per sequence, in MACs (e.g. a depth transformer "
        "predicting residual-VQ codes); runs on the cores after the last layer",
    )
    source: str = Field("", description="where these dims come from")

    @model_validator(mode="after")
    def _check(self) -> ModelDims:
        if self.kv_heads is None:
            self.kv_heads = self.heads
        if self.head_dim is None:
            if self.hidden % self.heads:
                raise ValueError(f"hidden ({self.hidden}) is not divisible by heads ({self.heads})")
            self.head_dim = self.hidden // self.heads
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        return self

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.mlp_kind == "swiglu" else 2

    @property
    def mlp_params(self) -> int:
        return self.mlp_matrices * self.hidden * self.mlp_hidden

    @property
    def attn_params(self) -> int:
        """Q, K, V and O projection weights."""
        return self.hidden * (2 * self.q_dim + 2 * self.kv_dim)

    @property
    def layer_params(self) -> int:
        return self.attn_params + self.mlp_params
