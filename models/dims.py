"""Transformer dimensions: the one description of a model's shape used by the cost model and PyTorch side.

Kept free of torch so the hardware side can import it cheaply.
"""

from __future__ import annotations

import math
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

#: Upper bound of every model dimension: far above any real model, low enough that the cost model's
#: integer products (rows x columns x batch) stay inside int64.
MAX_DIM = 1 << 20
#: Most decoder layers: far above any real model; also what trace files of the first format (int16 layer
#: ids) hold.
MAX_LAYERS = (1 << 15) - 1
#: Most non-LLM MACs per token (1e12, a hundred times a 7B model's whole decode step).
MAX_EXTRA_MACS = 10**12


#: A name a user gives that becomes a file or directory name or a summary key (a run name, a preset, a
#: memory group): a plain file name (no separators, no leading dot, so never "", ".", ".." or a path).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"


def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types a field annotation admits (through Optional, unions, lists, Annotated)."""
    origin = get_origin(annotation)
    if origin is None:
        return {annotation} if isinstance(annotation, type) else set()
    if origin is typing.Annotated:
        return _scalar_kinds(get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, tuple, set, frozenset):
        return set().union(*(_scalar_kinds(a) for a in get_args(annotation)))
    return set()


class InputModel(BaseModel):
    """Base of every section a user writes (workload, hardware, model dims): unknown keys rejected, and
    numbers and booleans kept apart. YAML has real booleans and real floats, so pydantic's lax coercions
    only hide mistakes here: ``cores: true`` would become 1 and ``drs: 1`` true. Numbers must be finite
    (NaN compares false with everything, so a NaN threshold would silently never replay). Numeric strings
    such as ``1e9`` (which YAML 1.1 reads as a string) are still accepted as numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_and_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is None or value is None:
            return value
        kinds = _scalar_kinds(field.annotation)
        numeric = bool(kinds & {int, float}) and bool not in kinds
        if bool in kinds and not numeric and not kinds & {int, float, str}:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if numeric:
            listed = isinstance(value, list) and list in _containers(field.annotation)
            for i, item in enumerate(value if listed else [value]):
                where = f" (element {i} is {item!r})" if listed else ""
                if isinstance(item, bool):
                    raise ValueError(f"expected a number, not a boolean{where}")
                if isinstance(item, float | str) and not _finite(item):
                    raise ValueError(f"must be a finite number{where}")
        return value


def _containers(annotation: Any) -> set[Any]:
    origin = get_origin(annotation)
    if origin is None:
        return set()
    return {origin}.union(*(_containers(a) for a in get_args(annotation)))


def _finite(value: float | str) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):  # not a number at all: pydantic says so
        return True


class ModelDims(InputModel):
    """Shape of a Llama-style decoder. Defaults are none: every preset states its dims."""

    name: str = Field("custom", description="model name, for reports")
    layers: int = Field(gt=0, le=MAX_LAYERS, description="decoder layers (the layers replay acts on)")
    hidden: int = Field(gt=0, le=MAX_DIM, description="hidden size d_model")
    heads: int = Field(gt=0, le=MAX_DIM, description="attention (query) heads")
    kv_heads: int | None = Field(None, gt=0, le=MAX_DIM, description="key/value heads (GQA); default = heads")
    head_dim: int | None = Field(None, gt=0, le=MAX_DIM, description="per-head dim; default = hidden / heads")
    mlp_hidden: int = Field(gt=0, le=MAX_DIM, description="MLP inner size")
    mlp_kind: Literal["swiglu", "gelu"] = Field("swiglu", description="swiglu: 3 matrices; gelu: 2")
    vocab: int = Field(16384, gt=0, le=MAX_DIM, description="visual-token vocabulary (output head size)")
    extra_macs_per_token: int = Field(
        0,
        ge=0,
        le=MAX_EXTRA_MACS,
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
        if self.q_dim > MAX_DIM:
            raise ValueError(f"heads x head_dim = {self.q_dim} exceeds {MAX_DIM}")
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
