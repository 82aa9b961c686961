"""Property-based fuzzing of what users feed the CLI: ``--set`` values over every workload key, and the
contents of trace files. Whatever the input: exit code 0 or 2, never a traceback, nothing written on exit
2, and no file outside the output directory touched."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
from pathlib import Path
from typing import get_args

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from tiny_workload import TINY

from accelerator.spec import MemoryGroup
from cosim.cli import main
from cosim.config import Workload
from cosim.traces.schema import META_KEY, write_trace

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the suite is deterministic; raise max_examples locally to search harder
)


def leaf_keys(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every settable key of the workload schema, as --set spells it, with its type annotation."""
    keys = {}
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= leaf_keys(ann, f"{prefix}{name}.")
        elif name == "memory":
            keys |= leaf_keys(MemoryGroup, f"{prefix}memory.ddr4.")
        else:
            keys[prefix + name] = ann
    return keys


KEY_TYPES = leaf_keys(Workload)
KEYS = sorted(KEY_TYPES)
SCALARS = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, 1, 2**15, 2**31, 2**63, 10**12, -(2**40)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["..", ".", "/etc/passwd", "../../x", "a b", "{a: 1}", "[1, 2", "!!python/none", ""]),
)
EDGES = st.sampled_from(["-1", "0", "-0.5", ".nan", ".inf", "-.inf", "true", "1e300", "99999999999", "null"])
VALUES = st.one_of(
    EDGES,
    SCALARS.map(lambda v: yaml.safe_dump(v, default_flow_style=True).removesuffix("\n...\n").strip()),
    st.lists(SCALARS, max_size=4).map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    st.text(max_size=20),
)


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        st_ = p.lstat()
        out[p.relative_to(root).as_posix()] = (st_.st_size, st_.st_mtime_ns)
    return out


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    old = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code
    finally:
        signal.signal(signal.SIGTERM, old)
    return code, err.getvalue()


def check_contract(tmp: Path, argv: list[str], out: Path) -> int:
    shutil.rmtree(out, ignore_errors=True)  # an earlier example's run
    before = snapshot(tmp, out)
    code, err = run_cli(argv)
    assert code in (0, 2), f"exit {code} for {argv}:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert not out.exists(), f"exit 2 but {out} was written"
    assert snapshot(tmp, out) == before, "a file outside the output directory was touched"
    return code


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    raw = dict(TINY, outputs={"report": False, "timeline_steps": 0})
    (d / "tiny.yaml").write_text(yaml.safe_dump(raw))
    return d


def typed_values(ann) -> st.SearchStrategy[str]:
    """Values of the key's own type at the edges of (and beyond) its range: what passes the type check and
    must then be range-checked."""
    text = repr(ann)
    if "bool" in text:
        return st.sampled_from(["true", "false", "1", "0"])
    if "int" in text:
        return st.one_of(st.integers(-2, 40), st.sampled_from([2**15, 2**31, 2**32, 2**63, 10**12])).map(str)
    if "float" in text:
        return st.one_of(
            st.floats(-10, 1e4).map(repr), st.sampled_from([".nan", ".inf", "-.inf", "1e300", "0", "-1e-9"])
        )
    if "Literal" in text:
        return st.sampled_from([str(a) for a in get_args(ann)] + ["nope"])
    return st.sampled_from(["..", "../x", "/etc", "a", "", "null"])


@st.composite
def override(draw) -> tuple[str, str]:
    key = draw(st.sampled_from(KEYS + ["nope", "video.nope", "model..x"]))
    typed = key in KEY_TYPES and draw(st.integers(0, 3)) > 0  # mostly well-typed, sometimes anything
    return key, draw(typed_values(KEY_TYPES[key]) if typed else VALUES)


@FUZZ
@given(sets=st.lists(override(), max_size=2))
def test_set_values_never_crash(fuzz_dir, sets):
    out = fuzz_dir / "out"
    argv = ["run", str(fuzz_dir / "tiny.yaml"), "--out", str(out), "--quiet"]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    check_contract(fuzz_dir, argv, out)


# --- trace files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory) -> Path:
    """A valid trace of the tiny workload's shape, written by the tool itself."""
    from cosim.config import resolve
    from cosim.traces import load_trace

    d = tmp_path_factory.mktemp("trace-fuzz")
    w = resolve(dict(TINY))
    write_trace(load_trace(w).trace, d / "good.parquet")
    raw = dict(TINY, trace={"source": "file", "path": "t.parquet"}, outputs={"report": False})
    (d / "tiny.yaml").write_text(yaml.safe_dump(raw))
    return d


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)


@st.composite
def corrupted_trace(draw, good: pa.Table) -> tuple[pa.Table, bytes]:
    """A valid trace with a few edits: cells, whole columns (dtype), rows, or the metadata JSON."""
    df = good.to_pandas()
    meta = json.loads(good.schema.metadata[META_KEY])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cell", "column", "rows", "meta", "meta_text"]))
        if kind == "cell":
            col = draw(st.sampled_from(list(df.columns)))
            row = draw(st.integers(0, len(df) - 1))
            value = draw(CELLS)
            df[col] = df[col].astype(object)
            df.at[row, col] = value
        elif kind == "column":
            col = draw(st.sampled_from(list(df.columns)))
            how = draw(st.sampled_from(["text", "fraction", "negate"]))
            try:
                numeric = df[col].astype(float)
            except (TypeError, ValueError):
                how = "text"  # already text after an earlier edit
            df[col] = (
                df[col].astype(str) if how == "text" else numeric + 0.5 if how == "fraction" else -numeric
            )
        elif kind == "rows":
            op = draw(st.sampled_from(["drop", "duplicate", "shuffle"]))
            if op == "drop":
                df = df.drop(index=draw(st.integers(0, len(df) - 1))).reset_index(drop=True)
            elif op == "duplicate":
                df = pd_concat(df, df.iloc[[draw(st.integers(0, len(df) - 1))]])
            else:
                df = df.sample(frac=1, random_state=draw(st.integers(0, 9))).reset_index(drop=True)
        elif kind == "meta":
            key = draw(st.sampled_from(sorted(meta)))
            if draw(st.booleans()):
                meta.pop(key)
            else:
                meta[key] = draw(CELLS.filter(lambda v: not (isinstance(v, float) and not math.isfinite(v))))
        else:
            return _table(df), draw(st.binary(max_size=30))
    return _table(df), json.dumps(meta).encode()


def pd_concat(a, b):
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def _table(df) -> pa.Table:
    for col in df.columns:  # mixed object columns: store them as text, as a hand-edited file would
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    return pa.Table.from_pandas(df, preserve_index=False)


@FUZZ
@given(data=st.data())
def test_trace_contents_never_crash(trace_dir, data):
    good = pq.read_table(trace_dir / "good.parquet")
    table, meta = data.draw(corrupted_trace(good))
    pq.write_table(table.replace_schema_metadata({META_KEY: meta}), trace_dir / "t.parquet")
    out = trace_dir / "out"
    argv = ["run", str(trace_dir / "tiny.yaml"), "--out", str(out), "--quiet"]
    check_contract(trace_dir, argv, out)


def test_fuzz_keys_cover_the_schema():
    """The --set fuzzer reaches every section (guards against the key walk silently finding nothing)."""
    sections = {k.split(".")[0] for k in KEYS}
    assert sections >= {"name", "model", "video", "trace", "policy", "hardware", "scheduler", "simulation"}
    assert "hardware.memory.ddr4.capacity_GiB" in KEYS and len(KEYS) > 60
