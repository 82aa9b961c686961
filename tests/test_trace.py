import numpy as np
import pandas as pd
import pytest

from cosim.traces import Trace, TraceError, TraceMeta, read_trace, write_trace


def small_trace(**meta_kw):
    meta = TraceMeta(
        layers=2,
        frames=3,
        tokens_per_frame=4,
        batch=2,
        source="captured",
        source_detail="ckpt.pt",
        policy="tas",
        threshold=-3.0,
        model={"hidden": 8},
        **meta_kw,
    )
    rng = np.random.default_rng(1)
    tas = rng.normal(-3, 1, size=(2, 2, 12)).astype(np.float32)
    tas[:, :, :4] = np.nan
    replay = np.nan_to_num(tas, nan=-np.inf) >= -3.0
    return Trace.from_arrays(tas, replay, meta, mlp_rel_error=rng.random((2, 2, 12)))


def test_round_trip_keeps_table_and_metadata(tmp_path):
    t = small_trace()
    write_trace(t, tmp_path / "t.parquet")
    back = read_trace(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(back.table, t.table)
    assert back.meta == t.meta
    assert back.meta.label() == "captured from ckpt.pt"
    assert back.replay_cube().shape == (2, 2, 12) and back.replay_ratio() == t.replay_ratio()


def test_columns_and_frames():
    t = small_trace()
    row = t.table.iloc[7]
    assert (row["seq"], row["layer"], row["step"], row["frame"], row["token"]) == (0, 0, 7, 1, 3)


def test_rejects_first_frame_replay_and_bad_shapes(tmp_path):
    t = small_trace()
    bad = t.table.copy()
    bad.loc[0, "replay"] = True
    with pytest.raises(TraceError, match="first frame"):
        Trace(bad, t.meta)
    with pytest.raises(TraceError, match="rows"):
        Trace(t.table.iloc[:-1], t.meta)
    with pytest.raises(TraceError, match="not found"):
        read_trace(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "junk.parquet")


def test_synthetic_and_transferred_labels():
    assert "not captured" in TraceMeta(1, 2, 1, 1, "synthetic").label()
    assert "transferred from x" in TraceMeta(1, 2, 1, 1, "transferred", "x").label()
