"""Trace files cannot be misused: every defect of a trace file or table is a one-line TraceError naming the
file, the column or metadata field and the reason; ids never wrap; TAS is finite (NaN only in frame 0);
the data carries a checksum, and data edited after writing is labelled so and not presented as real."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_workload import TINY

from cosim.config import WorkloadError, resolve
from cosim.errors import InputError
from cosim.traces import TransferError, load_trace, threshold_for_ratio, transfer_trace
from cosim.traces.schema import (
    CFG_LAYOUT,
    CHECKSUM_MISMATCH,
    META_KEY,
    NO_CHECKSUM,
    Trace,
    TraceError,
    TraceMeta,
    data_checksum,
    read_trace,
    write_trace,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "workloads" / "traces").glob("*.parquet"))

# The tiny workload's dims: model preset "tiny" has 4 layers; 2 prompts x CFG = batch 4; 4 x 16 tokens.
B, L, T, N = 4, 4, 4, 16
S = T * N


def make_trace(b=B, layers=L, frames=T, n=N, source="captured", cfg=True, seed=0) -> Trace:
    rng = np.random.default_rng(seed)
    steps = frames * n
    tas = rng.normal(-2.0, 1.0, size=(b, layers, steps)).astype(np.float32)
    tas[:, :, :n] = np.nan
    replay = np.nan_to_num(tas, nan=-np.inf) >= -2.0
    meta = TraceMeta(
        layers=layers,
        frames=frames,
        tokens_per_frame=n,
        batch=b,
        source=source,
        source_detail="tiny.safetensors",
        policy="tas",
        threshold=-2.0,
        extra={"cfg": cfg},
    )
    err = rng.random((b, layers, steps))
    err[:, :, :n] = np.nan
    return Trace.from_arrays(tas, replay, meta, mlp_rel_error=err)


def raw_write(path: Path, table: pd.DataFrame | pa.Table, meta: dict | bytes | str | None) -> Path:
    """Write a parquet file as anyone could, bypassing write_trace's checks."""
    arrow = table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else (meta if isinstance(meta, str) else json.dumps(meta))
        arrow = arrow.replace_schema_metadata({META_KEY: raw.encode() if isinstance(raw, str) else raw})
    else:
        arrow = arrow.replace_schema_metadata({})
    pq.write_table(arrow, path)
    return path


def meta_dict(trace: Trace) -> dict:
    return json.loads(trace.meta.to_json())


def one_line_error(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)


# ---------------------------------------------------------------------------------------------------
# 1. the (seq, layer, step) grid
# ---------------------------------------------------------------------------------------------------


def test_duplicate_and_missing_grid_entries_are_refused(tmp_path):
    t = make_trace()
    bad = t.table.copy()
    bad.loc[5, ["step", "token"]] = [4, 4]  # row 5 now repeats (0, 0, 4): same row count, one hole
    with pytest.raises(TraceError) as e:
        Trace(bad, t.meta)
    one_line_error(e, "exactly once", "1 appear more than once (first (0, 0, 4))", "first (0, 0, 5)")
    path = raw_write(tmp_path / "dup.parquet", bad, meta_dict(t))
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), "exactly once")


def test_rows_in_any_order_read_as_the_grid(tmp_path):
    t = make_trace()
    shuffled = t.table.sample(frac=1.0, random_state=3)
    back = read_trace(raw_write(tmp_path / "s.parquet", shuffled, meta_dict(t)))
    pd.testing.assert_frame_equal(back.table, t.table)


def test_ids_outside_the_dims_are_refused():
    t = make_trace()
    for col, value, fragment in (
        ("seq", B, "batch = 4"),
        ("layer", L, "layers = 4"),
        ("step", S, "frames x tokens_per_frame = 64"),
    ):
        bad = t.table.copy()
        bad.loc[3, col] = value
        with pytest.raises(TraceError) as e:
            Trace(bad, t.meta)
        one_line_error(e, f"column {col} holds {value} at row 3", fragment)


# ---------------------------------------------------------------------------------------------------
# 2. frame and token follow from step
# ---------------------------------------------------------------------------------------------------


def test_relabelled_frames_cannot_bypass_the_first_frame_rule(tmp_path):
    t = make_trace()
    bad = t.table.copy()
    first = bad["step"] < N
    bad.loc[first, "frame"] = 1  # frame 0 relabelled as frame 1 ...
    bad.loc[first, "replay"] = True  # ... so that it seems allowed to replay
    path = raw_write(tmp_path / "relabel.parquet", bad, meta_dict(t))
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), "column frame is not step // tokens_per_frame (16)", "(0, 0, 0)")
    bad = t.table.copy()
    bad.loc[7, "token"] = 0
    with pytest.raises(TraceError) as e:
        Trace(bad, t.meta)
    one_line_error(e, "column token is not step % tokens_per_frame", "1 row(s), first at")


# ---------------------------------------------------------------------------------------------------
# 3./4. TAS: finite, NaN only in frame 0
# ---------------------------------------------------------------------------------------------------


def test_nan_tas_outside_frame_0_is_refused_with_count_and_first_entry(tmp_path):
    t = make_trace()
    bad = t.table.copy()
    rows = bad.index[(bad["seq"] == 1) & (bad["layer"] == 2) & (bad["frame"] == 2)][:3]
    bad.loc[rows, "tas"] = np.nan
    path = raw_write(tmp_path / "nan.parquet", bad, meta_dict(t))
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), "column tas is NaN in 3 row(s)", "(1, 2, 32)", "only in frame 0")


def test_nan_and_finite_tas_in_frame_0_are_fine():
    t = make_trace()
    assert np.isnan(t.tas_cube()[:, :, :N]).all()
    table = t.table.copy()
    table.loc[table["frame"] == 0, "tas"] = 1.5  # a logger that wrote a score there: harmless
    assert Trace(table, t.meta).tas_cube()[0, 0, 0] == 1.5


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_tas_is_refused(tmp_path, value):
    t = make_trace()
    for frame in (0, 2):
        bad = t.table.copy()
        bad.loc[bad.index[bad["frame"] == frame][:2], "tas"] = value
        path = raw_write(tmp_path / f"inf{frame}.parquet", bad, meta_dict(t))
        with pytest.raises(TraceError) as e:
            read_trace(path)
        one_line_error(e, str(path), "column tas is infinite in 2 row(s)", "TAS must be finite")


def test_tas_beyond_float32_is_refused():
    t = make_trace()
    bad = t.table.copy()
    bad["tas"] = bad["tas"].astype("float64")
    bad.loc[bad.index[-1], "tas"] = 1e300
    with pytest.raises(TraceError) as e:
        Trace(bad, t.meta)
    one_line_error(e, "column tas exceeds the float32 range in 1 row(s)")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_traces_load_as_real_captures_with_a_valid_checksum(path):
    t = read_trace(path)
    assert t.meta.integrity == "" and t.meta.is_real, t.meta.label()
    model = path.stem.rsplit("_b", 1)[0]  # fastcar_tiny_b10.parquet: captured from fastcar_tiny
    assert t.meta.label() == f"captured from {model}.safetensors"
    assert np.isnan(t.tas_cube()[:, :, : t.meta.tokens_per_frame]).all()


def test_threshold_for_ratio_hits_the_target_on_finite_tas():
    """With non-finite values excluded, tau = k-th largest eligible TAS replays exactly k entries."""
    rng = np.random.default_rng(5)
    tas = rng.normal(size=(4, 4, 64))
    tas[:, :, :16] = np.nan  # frame 0: not eligible, but counted in the denominator
    for target in (0.0, 0.1, 0.25, 0.5, 0.7, 0.75):
        tau = threshold_for_ratio(tas, target)
        realised = np.count_nonzero(np.nan_to_num(tas, nan=-np.inf) >= tau) / tas.size
        assert realised == round(target * tas.size) / tas.size
    with pytest.raises(ValueError, match="only 768 of 1024"):
        threshold_for_ratio(tas, 0.8)


# ---------------------------------------------------------------------------------------------------
# 5. column types and metadata
# ---------------------------------------------------------------------------------------------------


def _column_cases():
    def setcol(col, values):
        def f(df):
            df[col] = values(df)
            return df

        return f

    def setval(col, dtype, value, row=20):
        def f(df):
            df[col] = df[col].astype(dtype)
            df.loc[row, col] = value
            return df

        return f

    return [
        ("layer", setcol("layer", lambda df: df["layer"].astype(str)), "column layer must hold integers"),
        ("tas", setcol("tas", lambda df: df["tas"].astype(str)), "column tas must hold numbers"),
        ("tas", setcol("tas", lambda df: df["step"] >= 0), "column tas must hold numbers, found bool"),
        ("replay", setcol("replay", lambda df: df["replay"].astype(str)), "column replay must hold booleans"),
        ("replay", setval("replay", "int64", 2), "column replay holds 2 at row 20, not a boolean"),
        ("step", setval("step", "float64", 20.5), "column step holds 20.5 at row 20, not a whole number"),
        ("seq", setval("seq", "int64", 2**40), "column seq holds 1099511627776 at row 20, outside 0.."),
        ("frame", setval("frame", "int64", -1), "column frame holds -1 at row 20, outside 0.."),
        ("token", setval("token", "float64", np.nan), "column token has a missing value at row 20"),
        ("mlp_rel_error", setval("mlp_rel_error", "float32", -1.0), "column mlp_rel_error must be NaN"),
        ("mlp_rel_error", setval("mlp_rel_error", "float32", np.inf), "column mlp_rel_error must be NaN"),
        ("replay", lambda df: df.drop(columns=["replay"]), "missing column(s): replay"),
    ]


@pytest.mark.parametrize(
    "col, corrupt, fragment", _column_cases(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_bad_columns_are_trace_errors_naming_file_and_column(tmp_path, col, corrupt, fragment):
    t = make_trace()
    path = raw_write(tmp_path / "bad.parquet", corrupt(t.table.copy()), meta_dict(t))
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), fragment)


def test_integral_floats_and_small_ints_in_id_columns_read_fine(tmp_path):
    t = make_trace()
    table = t.table.copy()
    table["step"] = table["step"].astype("float64")
    table["layer"] = table["layer"].astype("uint8")
    table["replay"] = table["replay"].astype("int8")
    back = read_trace(raw_write(tmp_path / "ok.parquet", table, meta_dict(t)))
    pd.testing.assert_frame_equal(back.table, t.table)


def test_null_values_in_the_file_are_refused(tmp_path):
    t = make_trace()
    arrow = pa.Table.from_pandas(t.table, preserve_index=False)
    replay = pa.array([None] + t.table["replay"].tolist()[1:], pa.bool_())
    arrow = arrow.set_column(arrow.schema.get_field_index("replay"), "replay", replay)
    path = raw_write(tmp_path / "null.parquet", arrow, meta_dict(t))
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), "column replay")
    layer = pa.array([None] + t.table["layer"].tolist()[1:], pa.int32())
    arrow = pa.Table.from_pandas(t.table, preserve_index=False)
    arrow = arrow.set_column(arrow.schema.get_field_index("layer"), "layer", layer)
    with pytest.raises(TraceError) as e:
        read_trace(raw_write(tmp_path / "null2.parquet", arrow, meta_dict(t)))
    one_line_error(e, "column layer has a missing value at row 0")


def _meta_cases():
    def edit(**kw):
        def f(m):
            for k, v in kw.items():
                if v is KeyError:
                    m.pop(k)
                else:
                    m[k] = v
            return m

        return f

    return [
        ("not json", b"{not json", "metadata fastcar.trace is not valid JSON"),
        ("not utf8", b"\xff\xfe\x00", "metadata fastcar.trace is not UTF-8 text"),
        ("list", b"[1, 2]", "metadata fastcar.trace must be a JSON object, got list"),
        ("string", b'"captured"', "must be a JSON object, got str"),
        ("missing layers", edit(layers=KeyError), "missing field(s) layers"),
        ("missing source+batch", edit(source=KeyError, batch=KeyError), "missing field(s) batch, source"),
        ("missing version", edit(schema_version=KeyError), "missing field(s) schema_version"),
        ("layers str", edit(layers="4"), "metadata field layers must be a positive integer, got '4'"),
        ("layers float", edit(layers=4.0), "field layers must be a positive integer, got 4.0"),
        ("batch bool", edit(batch=True), "field batch must be a positive integer, got True"),
        ("frames 0", edit(frames=0), "field frames must be a positive integer, got 0"),
        ("tpf negative", edit(tokens_per_frame=-16), "field tokens_per_frame must be a positive integer"),
        ("layers huge", edit(layers=2**40), "field layers must be at most 2147483647"),
        ("steps huge", edit(frames=2**20, tokens_per_frame=2**20), "do not fit the int32 step column"),
        ("source unknown", edit(source="trusted"), "trace source 'trusted' is not one of"),
        ("source number", edit(source=1), "field source must be a string"),
        ("detail", edit(source_detail=["x"]), "field source_detail must be a string"),
        ("policy", edit(policy=None), "field policy must be a string"),
        ("threshold str", edit(threshold="-1"), "field threshold must be null, a finite number"),
        ("threshold nan", edit(threshold=float("nan")), "field threshold must be null, a finite number"),
        ("threshold list", edit(threshold=[1.0, 2.0]), "or a list of 4 finite numbers"),
        ("model", edit(model=[]), "field model must be an object"),
        ("extra", edit(extra="cfg"), "field extra must be an object"),
        ("extra.cfg", edit(extra={"cfg": "yes"}), "field extra.cfg must be true or false"),
        (
            "cfg_layout unknown",
            edit(extra={"cfg": True, "cfg_layout": "interleaved"}),
            "metadata field extra.cfg_layout must be 'halves' (conditional rows [0, P), unconditional copies "
            "[P, 2P)), an unknown CFG batch layout, got 'interleaved'",
        ),
        ("cfg_layout type", edit(extra={"cfg_layout": 2}), "field extra.cfg_layout must be 'halves'"),
        ("labels", edit(extra={"batch_labels": [0, 1]}), "extra.batch_labels must be a list of batch = 4"),
        ("version", edit(schema_version=2), "trace schema version 2, this tool reads 1"),
        ("version str", edit(schema_version="1"), "field schema_version must be an integer"),
        ("integrity", edit(integrity="verified"), "field integrity must be"),
        ("checksum", edit(checksum="md5:abc"), "field checksum must be 'sha256:' and 64 hex digits"),
        ("checksum type", edit(checksum=5), "field checksum must be"),
        ("rows", edit(batch=2), "trace has 1024 rows, expected batch x layers x steps = 2 x 4 x 64 = 512"),
    ]


@pytest.mark.parametrize("name, change, fragment", _meta_cases(), ids=[c[0] for c in _meta_cases()])
def test_bad_metadata_is_a_trace_error_naming_file_and_field(tmp_path, name, change, fragment):
    t = make_trace()
    meta = change if isinstance(change, bytes) else change(meta_dict(t))
    path = raw_write(tmp_path / "m.parquet", t.table, meta)
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), fragment)


def test_cfg_layout_is_one_token(tmp_path):
    """The prose spelling captures wrote reads as the token, and is written as the token again."""
    t = make_trace()
    prose = "rows [0, P) conditional, rows [P, 2P) unconditional copies of the same prompts"
    path = raw_write(tmp_path / "prose.parquet", t.table, {**meta_dict(t), "extra": {"cfg_layout": prose}})
    back = read_trace(path)
    assert back.meta.extra["cfg_layout"] == CFG_LAYOUT == "halves"
    write_trace(back, tmp_path / "again.parquet")
    assert read_trace(tmp_path / "again.parquet").meta.extra["cfg_layout"] == "halves"
    made = Trace.from_arrays(
        t.tas_cube(), t.replay_cube(), TraceMeta(**{**meta_dict(t), "extra": {"cfg_layout": prose}})
    )
    assert made.meta.extra["cfg_layout"] == "halves"  # as a capture builds its trace


def test_files_without_metadata_or_not_parquet(tmp_path):
    t = make_trace()
    path = raw_write(tmp_path / "nometa.parquet", t.table, None)
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), "no FastCar trace metadata")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really\n\nPAR1")
    with pytest.raises(TraceError) as e:
        read_trace(tmp_path / "junk.parquet")
    one_line_error(e, "cannot read trace file")


def test_duplicate_column_names_are_refused(tmp_path):
    t = make_trace()
    arrow = pa.Table.from_pandas(t.table, preserve_index=False)
    arrow = arrow.append_column("tas", arrow.column("tas"))
    path = raw_write(tmp_path / "dupcol.parquet", arrow, meta_dict(t))
    with pytest.raises(TraceError) as e:
        read_trace(path)
    one_line_error(e, str(path), "column tas appears more than once")


def test_metas_built_in_code_are_checked_too():
    with pytest.raises(TraceError, match="field layers must be a positive integer"):
        Trace.from_arrays(np.zeros((1, 0, 2)), np.zeros((1, 0, 2), bool), TraceMeta(0, 2, 1, 1, "synthetic"))
    with pytest.raises(TraceError, match="replay array shape"):
        Trace.from_arrays(np.zeros((1, 1, 2)), np.zeros((1, 2, 2), bool), TraceMeta(1, 2, 1, 1, "synthetic"))


# ---------------------------------------------------------------------------------------------------
# 6. int32 ids: no wrap beyond 32,767; old int16 files still read
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers, frames", [(40_000, 2), (1, 40_000)])
def test_ids_beyond_int16_round_trip(tmp_path, layers, frames):
    tas = np.zeros((1, layers, frames), np.float32)
    tas[:, :, 0] = np.nan
    replay = np.zeros_like(tas, dtype=bool)
    replay[0, -1, -1] = True
    t = Trace.from_arrays(tas, replay, TraceMeta(layers, frames, 1, 1, "synthetic"))
    write_trace(t, tmp_path / "big.parquet")
    back = read_trace(tmp_path / "big.parquet")
    assert int(back.table["layer"].max()) == layers - 1 and int(back.table["frame"].max()) == frames - 1
    assert back.table["layer"].dtype == np.int32 and back.table["frame"].dtype == np.int32
    assert back.replay_cube()[0, -1, -1] and back.replay_cube().sum() == 1
    assert pq.read_schema(tmp_path / "big.parquet").field("layer").type == pa.int32()


def test_older_int16_files_read_as_before(tmp_path):
    t = make_trace()
    old = t.table.astype({"layer": "int16", "frame": "int16"})
    meta = meta_dict(t)
    meta.pop("integrity")  # files written before the checksum had neither field
    back = read_trace(raw_write(tmp_path / "old.parquet", old, meta))
    pd.testing.assert_frame_equal(back.table, t.table)
    assert back.meta.integrity == NO_CHECKSUM and back.meta.is_real
    assert back.meta.label() == "captured from tiny.safetensors (no checksum)"


def test_writing_refuses_values_that_do_not_fit(tmp_path):
    t = make_trace()
    t.table["seq"] = t.table["seq"].astype("int64")
    t.table.loc[0, "seq"] = 2**40  # changed after the Trace was made
    path = tmp_path / "w.parquet"
    with pytest.raises(TraceError) as e:
        write_trace(t, path)
    one_line_error(e, f"writing {path}", "column seq holds 1099511627776 at row 0, outside")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# 7. checksum and what the label says
# ---------------------------------------------------------------------------------------------------


def test_checksum_written_verified_and_deterministic(tmp_path):
    t = make_trace()
    write_trace(t, tmp_path / "a.parquet")
    write_trace(make_trace(), tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    stored = json.loads(pq.read_schema(tmp_path / "a.parquet").metadata[META_KEY])
    assert stored["checksum"] == data_checksum(t.table) and stored["checksum"].startswith("sha256:")
    back = read_trace(tmp_path / "a.parquet")
    assert back.meta == t.meta and back.meta.integrity == "" and back.meta.is_real
    assert back.meta.label() == "captured from tiny.safetensors"
    assert data_checksum(make_trace(seed=1).table) != stored["checksum"]


def test_checksum_does_not_depend_on_storage_types_or_nan_bits():
    t = make_trace()
    table = t.table.astype({"layer": "int16", "frame": "int64", "tas": "float64"})
    assert data_checksum(Trace(table, t.meta).table) == data_checksum(t.table)
    other_nan = t.table.copy()
    tas = other_nan["tas"].to_numpy().copy()
    tas[np.isnan(tas)] = np.frombuffer(np.uint32(0xFFC00001).tobytes(), np.float32)[0]  # another NaN
    other_nan["tas"] = tas
    assert data_checksum(other_nan) == data_checksum(t.table)


def test_data_edited_after_writing_loads_but_is_not_presented_as_real(tmp_path):
    t = make_trace()
    write_trace(t, tmp_path / "t.parquet")
    arrow = pq.read_table(tmp_path / "t.parquet")
    table = arrow.to_pandas()
    table.loc[table.index[-1], "replay"] = not table["replay"].iloc[-1]  # a valid, but edited, table
    edited = raw_write(tmp_path / "edited.parquet", table, arrow.schema.metadata[META_KEY])
    back = read_trace(edited)
    assert back.meta.integrity == CHECKSUM_MISMATCH and not back.meta.is_real
    assert back.meta.label() == "captured from tiny.safetensors (edited after writing: checksum mismatch)"
    # writing it again (a run directory does) does not wash the edit out
    write_trace(back, tmp_path / "again.parquet")
    again = read_trace(tmp_path / "again.parquet")
    assert again.meta.integrity == CHECKSUM_MISMATCH and not again.meta.is_real
    # nor does transferring it
    out = transfer_trace(back, layers=8, tokens_per_frame=16, frames=4, batch=4, seed=0)
    assert "edited after writing: checksum mismatch" in out.meta.label() and not out.meta.is_real


# ---------------------------------------------------------------------------------------------------
# 8. transfer
# ---------------------------------------------------------------------------------------------------


def test_transfer_errors_are_input_errors_naming_the_argument():
    src = make_trace()
    dims = dict(layers=8, tokens_per_frame=16, frames=4, batch=4, seed=0)
    for change, param, fragment in (
        ({"batch": 5}, "batch", "target batch must be even, got 5"),
        ({"layers": 0}, "layers", "positive integer, got 0"),
        ({"frames": -2}, "frames", "positive integer, got -2"),
        ({"tokens_per_frame": 2.5}, "tokens_per_frame", "positive integer, got 2.5"),
        ({"batch": True}, "batch", "positive integer, got True"),
        ({"seed": -1}, "seed", "non-negative integer, got -1"),
    ):
        with pytest.raises(TransferError) as e:
            transfer_trace(src, **{**dims, **change})
        assert isinstance(e.value, InputError) and e.value.param == param
        one_line_error(e, fragment)
    one_frame = make_trace(frames=1)
    with pytest.raises(TransferError) as e:
        transfer_trace(one_frame, **dims)
    assert e.value.param == "trace"
    one_line_error(e, "the source trace has 1 frame; 4 frames need a source with at least 2")


def _workload(tmp_path, source, path, **video):
    raw = json.loads(json.dumps(TINY))
    raw["trace"] = {"source": source, "path": str(path)}
    raw["video"].update(video)
    return resolve(raw, [], origin=str(tmp_path / "w.yaml"))


def test_transfer_errors_through_the_workload_name_the_key(tmp_path):
    write_trace(make_trace(), tmp_path / "t.parquet")
    with pytest.raises(WorkloadError) as e:
        load_trace(_workload(tmp_path, "transfer", tmp_path / "t.parquet", prompts=3, cfg=False))
    one_line_error(e, "video.prompts: cannot transfer", "must be even, got 3", "video.cfg: true")
    write_trace(make_trace(frames=1), tmp_path / "one.parquet")
    with pytest.raises(WorkloadError) as e:
        load_trace(_workload(tmp_path, "transfer", tmp_path / "one.parquet"))
    one_line_error(e, "trace.path: cannot transfer", "has 1 frame")


# ---------------------------------------------------------------------------------------------------
# The CLI: every kind of bad file is exit 2, one error line, no traceback, for source file and transfer
# ---------------------------------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    t = make_trace()
    m = meta_dict(t)
    tab = t.table
    files: dict[str, tuple[pd.DataFrame | pa.Table, dict | bytes | None, str]] = {}

    def with_rows(mask_fn, col, value):
        df = tab.astype({col: "float64" if isinstance(value, float) else "int64"})
        df.loc[mask_fn(df), col] = value
        return df

    files["duplicate"] = (with_rows(lambda d: d.index == 5, "step", 4), m, "exactly once")
    files["relabel"] = (
        with_rows(lambda d: d["step"] < N, "frame", 1).assign(replay=lambda d: d["replay"] | (d["step"] < N)),
        m,
        "column frame is not",
    )
    files["nan"] = (with_rows(lambda d: d.index == 100, "tas", np.nan), m, "column tas is NaN")
    files["neg_inf"] = (with_rows(lambda d: d["frame"] > 0, "tas", -np.inf), m, "column tas is infinite")
    files["pos_inf"] = (with_rows(lambda d: d.index == 99, "tas", np.inf), m, "column tas is infinite")
    files["string_col"] = (tab.assign(layer=tab["layer"].astype(str)), m, "column layer must hold integers")
    files["fraction"] = (tab.assign(step=tab["step"] + 0.5), m, "column step holds 0.5")
    files["overflow"] = (with_rows(lambda d: d.index == 0, "seq", 2**40), m, "outside 0..2147483647")
    files["not_json"] = (tab, b"{oops", "is not valid JSON")
    files["not_object"] = (tab, b"[]", "must be a JSON object")
    files["missing_field"] = (tab, {k: v for k, v in m.items() if k != "frames"}, "missing field(s) frames")
    files["wrong_type"] = (tab, {**m, "layers": "four"}, "field layers must be a positive integer")
    files["zero_dim"] = (tab, {**m, "batch": 0}, "field batch must be a positive integer, got 0")
    files["bad_source"] = (tab, {**m, "source": "gold"}, "trace source 'gold'")
    files["no_meta"] = (tab, None, "no FastCar trace metadata")
    out = {}
    for name, (table, meta, fragment) in files.items():
        out[name] = (raw_write(tmp_path / f"{name}.parquet", table, meta), fragment)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    out["junk"] = (junk, "cannot read trace file")
    return out


def _cli_jobs(tmp_path: Path) -> list[tuple[str, str, Path, str]]:
    jobs = [(n, src, p, f) for n, (p, f) in _bad_files(tmp_path).items() for src in ("file", "transfer")]
    one_frame, ok = tmp_path / "one_frame.parquet", tmp_path / "ok.parquet"
    write_trace(make_trace(frames=1), one_frame)
    write_trace(make_trace(), ok)
    jobs.append(("one_frame", "transfer", one_frame, "trace.path: cannot transfer"))
    jobs.append(("odd_batch", "transfer", ok, "video.prompts: cannot transfer"))
    return jobs


def _cli_args(tmp_path: Path, i: int, name: str, source: str, path: Path) -> list[str]:
    raw = json.loads(json.dumps(TINY))
    raw["trace"] = {"source": source, "path": str(path)}
    if name == "odd_batch":
        raw["video"].update(prompts=3, cfg=False)
    wl = tmp_path / f"w{i}.yaml"
    wl.write_text(yaml.safe_dump(raw))
    return ["run", str(wl), "--out", str(tmp_path / f"out{i}")]


def _check_cli_error(code: int, err: str, where: str, fragment: str) -> None:
    assert code == 2, where
    assert "Traceback" not in err, where
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), where
    assert fragment in lines[0], where
    assert lines[0].startswith(("error: trace.path: ", "error: video.prompts: ")), where


def test_cli_bad_trace_files_exit_2_with_one_error_line(tmp_path, capsys):
    """Every kind of bad file, through source file and transfer (in process: the same main())."""
    from cosim.cli import main

    for i, (name, source, path, fragment) in enumerate(_cli_jobs(tmp_path)):
        capsys.readouterr()
        code = main(_cli_args(tmp_path, i, name, source, path))
        err = capsys.readouterr().err
        _check_cli_error(code, err, f"{name} ({source}): {err}", fragment)
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


def test_cli_subprocess_bad_trace_files_exit_2(tmp_path):
    """The same through `python -m cosim run` for a sample of kinds (the test above covers them all in
    process), run side by side to stay fast."""
    sample = {("nan", "file"), ("neg_inf", "transfer"), ("not_json", "transfer"), ("string_col", "file")}
    sample |= {("junk", "transfer"), ("one_frame", "transfer"), ("odd_batch", "transfer")}
    picked = [j for j in _cli_jobs(tmp_path) if (j[0], j[1]) in sample]
    assert len(picked) == len(sample)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cosim", *_cli_args(tmp_path, i, name, source, path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, source, path, _) in enumerate(picked)
    ]
    for (name, source, _, fragment), p in zip(picked, procs, strict=True):
        _, err = p.communicate(timeout=120)
        _check_cli_error(p.returncode, err, f"{name} ({source}): {err}", fragment)
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# Property: random corruptions of a valid small trace either load cleanly or raise TraceError
# ---------------------------------------------------------------------------------------------------

SMALL = make_trace(b=2, layers=2, frames=3, n=4)
SMALL_META = {**meta_dict(SMALL), "checksum": data_checksum(SMALL.table)}
VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def corruptions(draw):
    table = SMALL.table.copy()
    meta: dict | bytes = dict(SMALL_META)
    columns = list(table.columns)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(["value"] * 4 + ["column"] * 2 + ["rows"] * 2 + ["meta"] * 2 + ["meta_raw"])
        )
        if op == "value":
            col = draw(st.sampled_from(columns))
            row = draw(st.integers(0, len(table) - 1))
            value = draw(VALUES)
            table[col] = table[col].astype(object)
            table.loc[table.index[row], col] = value
        elif op == "column":
            col = draw(st.sampled_from(columns))
            kind = draw(st.sampled_from(["drop", "str", "float", "int8", "int64", "bool", "shift"]))
            if kind == "drop":
                table = table.drop(columns=[col])
                columns.remove(col)
                if not columns:
                    break
            elif kind == "str":
                table[col] = table[col].astype(str)
            elif kind == "shift":
                table[col] = table[col].to_numpy()[::-1]
            else:
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    table[col] = table[col].astype(kind)
        elif op == "rows":
            kind = draw(st.sampled_from(["drop", "duplicate", "shuffle"]))
            i = draw(st.integers(0, len(table) - 1))
            if kind == "drop" and len(table) > 1:
                table = table.drop(index=table.index[i])
            elif kind == "duplicate":  # row j becomes a copy of row i: same count, one hole
                j = draw(st.integers(0, len(table) - 1))
                table.iloc[j] = table.iloc[i]
            else:
                table = table.sample(frac=1.0, random_state=i)
            table = table.reset_index(drop=True)
        elif op == "meta" and isinstance(meta, dict):
            key = draw(st.sampled_from(sorted(SMALL_META) + ["checksum", "unknown"]))
            if draw(st.booleans()):
                meta.pop(key, None)
            else:
                meta[key] = draw(JSON_VALUES)
        else:
            meta = draw(st.binary(max_size=20))
    return table, meta


def _write_any(path: Path, table: pd.DataFrame, meta) -> bool:
    """Write as a user could; False when pyarrow itself cannot store such a table."""
    try:
        arrow = pa.Table.from_pandas(table, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return False
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    pq.write_table(arrow.replace_schema_metadata({META_KEY: raw}), path)
    return True


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corruptions())
def test_random_corruptions_load_cleanly_or_raise_trace_error(tmp_path, case):
    table, meta = case
    path = tmp_path / "c.parquet"
    if not _write_any(path, table, meta):
        return
    try:
        t = read_trace(path)
    except TraceError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    # loaded: the trace obeys every rule, and data that differs from what was written is not "as written"
    m = t.meta
    assert len(t.table) == m.batch * m.layers * m.steps
    tas = t.tas_cube()
    assert not np.isinf(tas).any() and not np.isnan(tas[:, :, m.tokens_per_frame :]).any()
    assert not t.replay_cube()[:, :, : m.tokens_per_frame].any()
    same_data = set(SMALL.table.columns) <= set(t.table.columns) and t.table[
        list(SMALL.table.columns)
    ].equals(SMALL.table)
    if not same_data and isinstance(meta, dict) and meta.get("checksum") == SMALL_META.get("checksum"):
        assert m.integrity != ""


def test_random_byte_damage_is_a_trace_error_or_loads(tmp_path):
    """Flip bytes of a written file: pyarrow either refuses it, or what it decodes is checked as usual."""
    write_trace(SMALL, tmp_path / "ok.parquet")
    data = (tmp_path / "ok.parquet").read_bytes()
    rng = np.random.default_rng(0)
    for i in range(60):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), size=rng.integers(1, 4)):
            damaged[pos] ^= int(rng.integers(1, 256))
        if i % 10 == 0:
            damaged = damaged[: rng.integers(0, len(data))]
        path = tmp_path / f"d{i}.parquet"
        path.write_bytes(bytes(damaged))
        try:
            t = read_trace(path)
        except TraceError as exc:
            assert "\n" not in str(exc)
            continue
        if not t.table[list(SMALL.table.columns)].equals(SMALL.table):
            assert t.meta.integrity == CHECKSUM_MISMATCH and not t.meta.is_real
