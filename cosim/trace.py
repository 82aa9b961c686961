"""The Trace: the replay decisions that cross from the model side to the hardware side.

One row per (sequence, layer, decode step). The table is stored as Parquet with its metadata (schema
version, model dims, where the decisions came from) in the file's key-value metadata, so a trace file is
self-describing and a report can always say whether it came from a real model.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cosim.errors import InputError

SCHEMA_VERSION = 1
META_KEY = b"fastcar.trace"

#: Sources a trace can come from; anything but "captured" is labelled as not from a real model run.
SOURCES = ("captured", "transferred", "synthetic", "file")

COLUMNS: dict[str, str] = {
    "seq": "int32",
    "layer": "int16",
    "step": "int32",
    "frame": "int16",
    "token": "int32",
    "tas": "float32",
    "replay": "bool",
}
OPTIONAL_COLUMNS: dict[str, str] = {"mlp_rel_error": "float32"}


class TraceError(InputError):
    """A trace file or table that does not follow the schema."""


@dataclass
class TraceMeta:
    """What a trace is about. ``source`` says whether a real model produced it."""

    layers: int
    frames: int
    tokens_per_frame: int
    batch: int
    source: str
    source_detail: str = ""
    policy: str = "tas"
    threshold: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def steps(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def is_real(self) -> bool:
        return self.source == "captured"

    def label(self) -> str:
        """The provenance line every report and summary prints."""
        if self.source == "captured":
            return f"captured from {self.source_detail or 'a model'}"
        if self.source == "transferred":
            return f"transferred from {self.source_detail or 'a captured trace'} (not a direct capture)"
        if self.source == "synthetic":
            return "synthetic (generated, not captured from a model)"
        return f"loaded from file {self.source_detail}".strip()

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TraceMeta:
        data = json.loads(text)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class Trace:
    table: pd.DataFrame
    meta: TraceMeta

    def __post_init__(self) -> None:
        validate_table(self.table, self.meta)

    # Dense (batch, layer, step) views; the table is sorted by (seq, layer, step) and complete.
    def _cube(self, column: str) -> np.ndarray:
        m = self.meta
        return self.table[column].to_numpy().reshape(m.batch, m.layers, m.steps)

    def tas_cube(self) -> np.ndarray:
        return self._cube("tas")

    def replay_cube(self) -> np.ndarray:
        return self._cube("replay").astype(bool)

    def replay_ratio(self) -> float:
        """Replayed MLPs / (layers x decode steps x batch), as the reference code counts it."""
        return float(self.table["replay"].mean())

    @classmethod
    def from_arrays(
        cls,
        tas: np.ndarray,
        replay: np.ndarray,
        meta: TraceMeta,
        mlp_rel_error: np.ndarray | None = None,
    ) -> Trace:
        """Build a trace from (batch, layers, steps) arrays."""
        b, layers, steps = tas.shape
        if (b, layers, steps) != (meta.batch, meta.layers, meta.steps):
            raise TraceError(
                f"array shape {tas.shape} does not match metadata (batch={meta.batch}, "
                f"layers={meta.layers}, steps={meta.steps})"
            )
        seq, layer, step = np.meshgrid(np.arange(b), np.arange(layers), np.arange(steps), indexing="ij")
        step = step.ravel()
        cols = {
            "seq": seq.ravel().astype("int32"),
            "layer": layer.ravel().astype("int16"),
            "step": step.astype("int32"),
            "frame": (step // meta.tokens_per_frame).astype("int16"),
            "token": (step % meta.tokens_per_frame).astype("int32"),
            "tas": tas.ravel().astype("float32"),
            "replay": replay.ravel().astype(bool),
        }
        if mlp_rel_error is not None:
            cols["mlp_rel_error"] = mlp_rel_error.ravel().astype("float32")
        return cls(pd.DataFrame(cols), meta)


def validate_table(table: pd.DataFrame, meta: TraceMeta) -> None:
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise TraceError(f"trace is missing column(s): {', '.join(missing)}")
    if meta.schema_version != SCHEMA_VERSION:
        raise TraceError(f"trace schema version {meta.schema_version}, this tool reads {SCHEMA_VERSION}")
    if meta.source not in SOURCES:
        raise TraceError(f"trace source {meta.source!r} is not one of {', '.join(SOURCES)}")
    expected = meta.batch * meta.layers * meta.steps
    if len(table) != expected:
        raise TraceError(
            f"trace has {len(table)} rows, expected batch x layers x steps = "
            f"{meta.batch} x {meta.layers} x {meta.steps} = {expected}"
        )
    first_frame = table["frame"].to_numpy() == 0
    if table["replay"].to_numpy()[first_frame].any():
        raise TraceError("trace replays in the first frame, which has no previous frame to replay from")


def write_trace(trace: Trace, path: str | os.PathLike) -> None:
    """Write atomically: a crash leaves either the old file or the new one."""
    path = Path(path)
    table = pa.Table.from_pandas(trace.table, preserve_index=False)
    table = table.replace_schema_metadata({META_KEY: trace.meta.to_json().encode()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".parquet.tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a trace is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_trace(path: str | os.PathLike) -> Trace:
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise TraceError(f"cannot read trace file {path}: {exc}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise TraceError(f"{path} has no FastCar trace metadata (key {META_KEY.decode()})")
    meta = TraceMeta.from_json(raw.decode())
    frame = table.to_pandas()
    for col, dtype in {**COLUMNS, **OPTIONAL_COLUMNS}.items():
        if col in frame.columns:
            frame[col] = frame[col].astype(dtype)
    frame = frame.sort_values(["seq", "layer", "step"], kind="stable").reset_index(drop=True)
    return Trace(frame, meta)
