"""The Trace: the replay decisions that cross from the model side to the hardware side.

One row per (sequence, layer, decode step). The table is stored as Parquet with its metadata (schema
version, model dims, where the decisions came from) in the file's key-value metadata, so a trace file is
self-describing and a report can always say whether it came from a real model.

Every way in (``Trace(...)``, :meth:`Trace.from_arrays`, :func:`read_trace`) goes through
:func:`validate_table`, and every way out (:func:`write_trace`) again, so a trace that exists is one the
simulator can trust to be well formed: each (seq, layer, step) of the batch x layers x steps grid exactly
once, ``frame``/``token`` derived from ``step``, TAS finite (NaN allowed only in frame 0), ids that fit
their int32 columns. Whatever is wrong raises :class:`TraceError` (one line naming the file, the column or
metadata field, and the reason).

The ``source`` label is self-declared by whoever wrote the file. What guards it is a sha256 checksum of the
data columns, written into the metadata by :func:`write_trace` and verified by :func:`read_trace`: data
changed after writing keeps loading, but its label says so and it no longer counts as a real capture. The
checksum catches edits, not forgery (anyone can recompute it); docs/traces.md says what the label
guarantees.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cosim.errors import InputError, is_finite_number, is_int, reason, shown

SCHEMA_VERSION = 1
META_KEY = b"fastcar.trace"

#: Sources a trace can come from; anything but "captured" is labelled as not from a real model run.
SOURCES = ("captured", "transferred", "synthetic", "file")

#: Stored column types. ``layer`` and ``frame`` were int16 before; such files read the same.
COLUMNS: dict[str, str] = {
    "seq": "int32",
    "layer": "int32",
    "step": "int32",
    "frame": "int32",
    "token": "int32",
    "tas": "float32",
    "replay": "bool",
}
OPTIONAL_COLUMNS: dict[str, str] = {"mlp_rel_error": "float32"}
ID_COLUMNS = ("seq", "layer", "step", "frame", "token")
INT32_MAX = int(np.iinfo(np.int32).max)

#: ``TraceMeta.integrity``: "" = as written (checksum verified, or built in memory); otherwise why the
#: data cannot be vouched for. Kept when a trace is written again, so an edit is never washed out.
NO_CHECKSUM = "no checksum"
CHECKSUM_MISMATCH = "checksum mismatch"
INTEGRITY = ("", NO_CHECKSUM, CHECKSUM_MISMATCH)
CHECKSUM_PREFIX = "sha256:"
_CHECKSUM_RE = re.compile(r"sha256:[0-9a-f]{64}")

#: Metadata fields a trace file must hold (the others have defaults).
REQUIRED_META = ("schema_version", "layers", "frames", "tokens_per_frame", "batch", "source")

#: ``extra.cfg_layout``: where a batch's CFG copies sit. The one layout: with P = batch / 2 prompts, the
#: conditional rows are [0, P) and the unconditional copies [P, 2P), row p + P the copy of row p (as
#: models/fastcar.py batches CFG). Every trace the tool makes says so; a trace without the field is read as
#: this layout.
CFG_LAYOUT = "halves"
CFG_LAYOUTS = (CFG_LAYOUT,)
#: Earlier spellings of a layout, read as the layout (captures wrote the prose one before the token).
CFG_LAYOUT_ALIASES = {
    "rows [0, P) conditional, rows [P, 2P) unconditional copies of the same prompts": CFG_LAYOUT,
}


class TraceError(InputError):
    """A trace file or table that does not follow the schema."""


@dataclass
class TraceMeta:
    """What a trace is about. ``source`` says whether a real model produced it; ``integrity`` whether its
    data is still what was written (see :data:`INTEGRITY`)."""

    layers: int
    frames: int
    tokens_per_frame: int
    batch: int
    source: str
    source_detail: str = ""
    policy: str = "tas"
    threshold: float | list[float] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    integrity: str = ""

    @property
    def steps(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def is_real(self) -> bool:
        """Captured from a model, and the data not changed since it was written."""
        return self.source == "captured" and self.integrity != CHECKSUM_MISMATCH

    def label(self) -> str:
        """The provenance line every report and summary prints."""
        if self.source == "captured":
            text = f"captured from {self.source_detail or 'a model'}"
        elif self.source == "transferred":
            text = f"transferred from {self.source_detail or 'a captured trace'} (not a direct capture)"
        elif self.source == "synthetic":
            text = "synthetic (generated, not captured from a model)"
        else:
            text = f"loaded from file {self.source_detail}".strip()
        if self.integrity == CHECKSUM_MISMATCH:
            text += " (edited after writing: checksum mismatch)"
        elif self.integrity == NO_CHECKSUM:
            text += " (no checksum)"
        return text

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "trace") -> TraceMeta:
        """Parse and check metadata JSON; ``where`` (the file) starts every error message."""
        return cls.from_dict(_parse_meta(text, where), where)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "trace") -> TraceMeta:
        missing = [k for k in REQUIRED_META if k not in data]
        if missing:
            raise TraceError(f"{where}: trace metadata is missing field(s) {', '.join(missing)}")
        meta = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        check_meta(meta, where)
        return meta


def _parse_meta(text: str, where: str) -> dict[str, Any]:
    key = META_KEY.decode()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(
            f"{where}: metadata {key} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise TraceError(f"{where}: metadata {key} is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise TraceError(f"{where}: metadata {key} must be a JSON object, got {type(data).__name__}")
    return data


def check_meta(meta: TraceMeta, where: str = "trace") -> None:
    """Types and ranges of every metadata field; raises :class:`TraceError` naming the field."""

    def bad(name: str, want: str, value: Any) -> TraceError:
        return TraceError(f"{where}: metadata field {name} must be {want}, got {shown(value)}")

    if not is_int(meta.schema_version):
        raise bad("schema_version", "an integer", meta.schema_version)
    if meta.schema_version != SCHEMA_VERSION:
        raise TraceError(
            f"{where}: trace schema version {meta.schema_version}, this tool reads {SCHEMA_VERSION}"
        )
    for name in ("layers", "frames", "tokens_per_frame", "batch"):
        value = getattr(meta, name)
        if not is_int(value) or value < 1:
            raise bad(name, "a positive integer", value)
        if value > INT32_MAX:
            raise bad(name, f"at most {INT32_MAX} (ids are int32)", value)
    if meta.frames * meta.tokens_per_frame > INT32_MAX + 1:
        raise TraceError(
            f"{where}: metadata fields frames x tokens_per_frame = {meta.frames * meta.tokens_per_frame} "
            f"decode steps do not fit the int32 step column"
        )
    if not isinstance(meta.source, str):
        raise bad("source", "a string", meta.source)
    if meta.source not in SOURCES:
        raise TraceError(f"{where}: trace source {meta.source!r} is not one of {', '.join(SOURCES)}")
    for name in ("source_detail", "policy"):
        if not isinstance(getattr(meta, name), str):
            raise bad(name, "a string", getattr(meta, name))
    t = meta.threshold
    if isinstance(t, list):
        if len(t) != meta.layers or not all(is_finite_number(x) for x in t):
            raise bad("threshold", f"null, a finite number or a list of {meta.layers} finite numbers", t)
    elif t is not None and not is_finite_number(t):
        raise bad("threshold", f"null, a finite number or a list of {meta.layers} finite numbers", t)
    for name in ("model", "extra"):
        if not isinstance(getattr(meta, name), dict):
            raise bad(name, "an object", getattr(meta, name))
    if "cfg" in meta.extra and not isinstance(meta.extra["cfg"], bool):
        raise bad("extra.cfg", "true or false", meta.extra["cfg"])
    if "cfg_layout" in meta.extra:
        layout = meta.extra["cfg_layout"]
        if isinstance(layout, str) and layout in CFG_LAYOUT_ALIASES:
            meta.extra["cfg_layout"] = layout = CFG_LAYOUT_ALIASES[layout]  # one spelling from here on
        if not isinstance(layout, str) or layout not in CFG_LAYOUTS:
            known = " or ".join(repr(x) for x in CFG_LAYOUTS)
            raise bad(
                "extra.cfg_layout",
                f"{known} (conditional rows [0, P), unconditional copies [P, 2P)), an unknown CFG batch "
                f"layout",
                layout,
            )
    labels = meta.extra.get("batch_labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != meta.batch):
        raise bad("extra.batch_labels", f"a list of batch = {meta.batch} entries", labels)
    if meta.integrity not in INTEGRITY:
        raise bad("integrity", " or ".join(repr(x) for x in INTEGRITY), meta.integrity)


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numeric(series: pd.Series, name: str, where: str, want: str) -> None:
    dt = series.dtype
    types = pd.api.types
    if types.is_bool_dtype(dt) or types.is_complex_dtype(dt) or not types.is_numeric_dtype(dt):
        raise TraceError(f"{where}: column {name} must hold {want}, found {dt} values")


def _ids(series: pd.Series, name: str, where: str) -> np.ndarray:
    """An id column as int64, every value a whole number in 0..INT32_MAX (no silent wrap or rounding)."""
    _numeric(series, name, where, "integers")
    missing = series.isna().to_numpy()
    if missing.any():
        raise TraceError(f"{where}: column {name} has a missing value at row {_first(missing)}")
    if pd.api.types.is_integer_dtype(series.dtype):
        raw = series.to_numpy()
        if raw.dtype == object:  # a nullable extension type without missing values
            raw = series.to_numpy(dtype=np.int64)
    else:
        raw = series.to_numpy(dtype=np.float64)
        frac = ~np.isfinite(raw) | (raw != np.round(raw))
        if frac.any():
            i = _first(frac)
            raise TraceError(f"{where}: column {name} holds {float(raw[i])!r} at row {i}, not a whole number")
    out = (raw < 0) | (raw > INT32_MAX)
    if out.any():
        i = _first(out)
        raise TraceError(f"{where}: column {name} holds {raw[i]} at row {i}, outside 0..{INT32_MAX} (int32)")
    return raw.astype(np.int64)


def _floats(series: pd.Series, name: str, where: str) -> np.ndarray:
    """A float column as float64; missing values become NaN (checked by the caller)."""
    _numeric(series, name, where, "numbers")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _bools(series: pd.Series, name: str, where: str) -> np.ndarray:
    dt = series.dtype
    missing = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(dt) or pd.api.types.is_integer_dtype(dt):
        if missing.any():
            raise TraceError(f"{where}: column {name} has a missing value at row {_first(missing)}")
        raw = series.to_numpy(dtype=np.int64) if not pd.api.types.is_bool_dtype(dt) else None
        if raw is not None:
            other = (raw != 0) & (raw != 1)
            if other.any():
                i = _first(other)
                raise TraceError(f"{where}: column {name} holds {raw[i]} at row {i}, not a boolean (0/1)")
        return series.to_numpy(dtype=bool)
    raise TraceError(f"{where}: column {name} must hold booleans, found {dt} values")


def _grid_error(key: np.ndarray, meta: TraceMeta, where: str) -> TraceError:
    """Describe holes and duplicates of the (seq, layer, step) grid; ``key`` has the right length."""
    counts = np.bincount(key, minlength=len(key))
    dup, hole = counts > 1, counts == 0

    def at(k: int) -> str:
        s, rest = divmod(k, meta.layers * meta.steps)
        layer, step = divmod(rest, meta.steps)
        return f"({s}, {layer}, {step})"

    return TraceError(
        f"{where}: each (seq, layer, step) of the batch x layers x steps grid must appear exactly once: "
        f"{int(dup.sum())} appear more than once (first {at(_first(dup))}), "
        f"{int(hole.sum())} are missing (first {at(_first(hole))})"
    )


def validate_table(
    table: pd.DataFrame, meta: TraceMeta, where: str = "trace", grid_known: bool = False
) -> pd.DataFrame:
    """Check ``table`` against ``meta`` and return it in canonical form: the schema's column types, rows in
    (seq, layer, step) order, a fresh index. Raises :class:`TraceError` naming ``where`` and the reason.

    ``grid_known``: the id columns are int32 and laid out canonically by construction (the tool built them
    itself, or checked them already), so only the values (TAS, replay, errors) are checked."""
    check_meta(meta, where)
    if not isinstance(table, pd.DataFrame):
        raise TraceError(f"{where}: a trace table must be a pandas DataFrame, got {type(table).__name__}")
    dup = table.columns[table.columns.duplicated()]
    if len(dup):
        raise TraceError(f"{where}: column {dup[0]} appears more than once")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise TraceError(f"{where}: trace is missing column(s): {', '.join(missing)}")
    expected = meta.batch * meta.layers * meta.steps
    if len(table) != expected:
        raise TraceError(
            f"{where}: trace has {len(table)} rows, expected batch x layers x steps = "
            f"{meta.batch} x {meta.layers} x {meta.steps} = {expected}"
        )
    if grid_known:
        return _checked_values(table, meta, where, {c: table[c].to_numpy() for c in ID_COLUMNS}, None)
    ids = {c: _ids(table[c], c, where) for c in ID_COLUMNS}
    for col, dim, size in (("seq", "batch", meta.batch), ("layer", "layers", meta.layers)):
        over = ids[col] >= size
        if over.any():
            i = _first(over)
            raise TraceError(f"{where}: column {col} holds {ids[col][i]} at row {i}, but {dim} = {size}")
    over = ids["step"] >= meta.steps
    if over.any():
        i = _first(over)
        raise TraceError(
            f"{where}: column step holds {ids['step'][i]} at row {i}, but frames x tokens_per_frame = "
            f"{meta.steps}"
        )
    key = (ids["seq"] * meta.layers + ids["layer"]) * meta.steps + ids["step"]
    order = None
    grid = np.arange(len(key))
    if not np.array_equal(key, grid):
        order = np.argsort(key, kind="stable")
        if not np.array_equal(key[order], grid):
            raise _grid_error(key, meta, where)
        ids = {c: v[order] for c, v in ids.items()}
    n = meta.tokens_per_frame
    for col, want, rule in (
        ("frame", ids["step"] // n, "step // tokens_per_frame"),
        ("token", ids["step"] % n, "step % tokens_per_frame"),
    ):
        wrong = ids[col] != want
        if wrong.any():
            raise TraceError(f"{where}: column {col} is not {rule} ({n}) in {_rows(wrong, ids)}")
    return _checked_values(table, meta, where, ids, order)


def _rows(mask: np.ndarray, ids: dict[str, np.ndarray]) -> str:
    i = _first(mask)
    at = ", ".join(str(ids[c][i]) for c in ("seq", "layer", "step"))
    return f"{int(mask.sum())} row(s), first at (seq, layer, step) = ({at})"


def _checked_values(
    table: pd.DataFrame, meta: TraceMeta, where: str, ids: dict[str, np.ndarray], order: np.ndarray | None
) -> pd.DataFrame:
    """The value rules (TAS finite, NaN only in frame 0, no replay in frame 0, errors >= 0) on a table
    whose ids are checked; the canonical table."""
    n, step = meta.tokens_per_frame, ids["step"]

    def rows(mask: np.ndarray) -> str:
        return _rows(mask, ids)

    def column(name: str) -> pd.Series:
        s = table[name]
        return s if order is None else s.iloc[order]

    first = step < n
    tas = _floats(column("tas"), "tas", where)
    inf = np.isinf(tas)
    if inf.any():
        raise TraceError(f"{where}: column tas is infinite in {rows(inf)}; TAS must be finite")
    late_nan = np.isnan(tas) & ~first
    if late_nan.any():
        raise TraceError(
            f"{where}: column tas is NaN in {rows(late_nan)}; TAS may be NaN only in frame 0 "
            f"(no aligned token there)"
        )
    with np.errstate(over="ignore"):
        tas32 = tas.astype(np.float32)
    big = np.isinf(tas32)
    if big.any():
        raise TraceError(f"{where}: column tas exceeds the float32 range in {rows(big)}")
    replay = _bools(column("replay"), "replay", where)
    early = replay & first
    if early.any():
        raise TraceError(
            f"{where}: trace replays in the first frame, which has no previous frame to replay from "
            f"({rows(early)})"
        )
    out = {c: ids[c].astype(np.int32, copy=False) for c in ID_COLUMNS}
    out["tas"], out["replay"] = tas32, replay
    if "mlp_rel_error" in table.columns:
        err = _floats(column("mlp_rel_error"), "mlp_rel_error", where)
        with np.errstate(over="ignore"):
            err32 = err.astype(np.float32)
        bad = np.isinf(err32) | (err32 < 0)
        if bad.any():
            raise TraceError(
                f"{where}: column mlp_rel_error must be NaN or a finite number >= 0; not so in {rows(bad)}"
            )
        out["mlp_rel_error"] = err32
    result = pd.DataFrame(out)
    for c in table.columns:  # further columns travel along, reordered with the rows
        if c not in out:
            result[c] = column(c).to_numpy()
    return result


def data_checksum(table: pd.DataFrame) -> str:
    """sha256 over a canonical byte form of the data columns of a canonical table (see
    :func:`validate_table`): each schema column present, in schema order, as its name, type, byte length
    and little-endian values; every NaN as one bit pattern. Further columns are not covered."""
    h = hashlib.sha256(b"fastcar.trace data v1\n")
    h.update(f"rows {len(table)}\n".encode())
    for name, dtype in {**COLUMNS, **OPTIONAL_COLUMNS}.items():
        if name not in table.columns:
            continue
        a = np.array(table[name].to_numpy(dtype=dtype), copy=True)
        if a.dtype.kind == "f":
            a[np.isnan(a)] = np.nan
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name} {dtype} {a.nbytes}\n".encode())
        h.update(a.tobytes())
    return CHECKSUM_PREFIX + h.hexdigest()


@dataclass
class Trace:
    table: pd.DataFrame
    meta: TraceMeta

    grid_known: InitVar[bool] = False  #: see :func:`validate_table`

    def __post_init__(self, grid_known: bool) -> None:
        self.table = validate_table(self.table, self.meta, grid_known=grid_known)

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
        check_meta(meta)
        want = (meta.batch, meta.layers, meta.steps)
        for name, arr in (("tas", tas), ("replay", replay), ("mlp_rel_error", mlp_rel_error)):
            if arr is not None and np.shape(arr) != want:
                raise TraceError(
                    f"{name} array shape {np.shape(arr)} does not match metadata (batch={meta.batch}, "
                    f"layers={meta.layers}, steps={meta.steps})"
                )
        b, layers, steps = want
        step = np.tile(np.arange(steps, dtype=np.int32), b * layers)
        cols = {
            "seq": np.repeat(np.arange(b, dtype=np.int32), layers * steps),
            "layer": np.tile(np.repeat(np.arange(layers, dtype=np.int32), steps), b),
            "step": step,
            "frame": step // np.int32(meta.tokens_per_frame),
            "token": step % np.int32(meta.tokens_per_frame),
            "tas": np.asarray(tas).ravel(),
            "replay": np.asarray(replay).ravel(),
        }
        if mlp_rel_error is not None:
            cols["mlp_rel_error"] = np.asarray(mlp_rel_error).ravel()
        return cls(pd.DataFrame(cols), meta, grid_known=True)


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def write_trace(trace: Trace, path: str | os.PathLike) -> None:
    """Write atomically: a crash leaves either the old file or the new one. The table is checked again
    (it may have been changed since the Trace was made): values that do not fit the schema are refused,
    never wrapped. The metadata gains the data's checksum; the same trace gives the same bytes."""
    path = Path(path)
    table = validate_table(trace.table, trace.meta, where=f"writing {path}")
    meta = json.loads(trace.meta.to_json())
    meta["checksum"] = data_checksum(table)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".parquet.tmp")
    os.close(fd)
    try:
        pq.write_table(arrow, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a trace is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_trace(path: str | os.PathLike) -> Trace:
    """Read and check a trace file. A file whose data no longer matches its checksum still loads, with
    ``meta.integrity = "checksum mismatch"`` (labelled "edited after writing", not a real capture); a file
    written without checksum loads with ``"no checksum"``."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}")
    try:  # everything that decodes the file: pyarrow raises many types on corrupt files
        with pq.ParquetFile(path) as f:  # not pq.read_table: it refuses duplicate names unexplained
            table = f.read()
        names = table.column_names
        raw = (table.schema.metadata or {}).get(META_KEY)
        frame = table.to_pandas() if raw is not None else None
    except Exception as exc:
        raise TraceError(f"cannot read trace file {path}: {reason(exc)}") from None
    if raw is None:
        raise TraceError(f"{path} has no FastCar trace metadata (key {META_KEY.decode()})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TraceError(f"{where}: metadata {META_KEY.decode()} is not UTF-8 text") from None
    data = _parse_meta(text, where)
    stored = data.pop("checksum", None)
    if stored is not None and (not isinstance(stored, str) or not _CHECKSUM_RE.fullmatch(stored)):
        raise TraceError(
            f"{where}: metadata field checksum must be '{CHECKSUM_PREFIX}' and 64 hex digits, got "
            f"{shown(stored)}"
        )
    meta = TraceMeta.from_dict(data, where)
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise TraceError(f"{where}: column {dup[0]} appears more than once")
    canonical = validate_table(frame.reset_index(drop=True), meta, where)
    if stored is None:
        if not meta.integrity:
            meta.integrity = NO_CHECKSUM
    elif stored != data_checksum(canonical):
        meta.integrity = CHECKSUM_MISMATCH
    return Trace(canonical, meta, grid_known=True)  # checked in full just above
