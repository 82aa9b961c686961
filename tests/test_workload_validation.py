"""Bad workloads are refused by the schema (exit 2, one line naming the key), and `validate` and `run`
refuse exactly the same ones: names, numbers, booleans, seeds, YAML files, policies, presets, memory
capacity, host memory and the bounds that keep the simulator's arithmetic exact."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from tiny_workload import TINY

from accelerator.capacity import GIB
from accelerator.spec import MemoryGroup
from cosim import config
from cosim.config import (
    CapacityError,
    Workload,
    WorkloadError,
    check_capacity,
    check_host_memory,
    host_memory_estimate,
    load_workload,
    memory_use,
    preset_names,
    resolve,
)
from models.dims import _scalar_kinds

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "workloads").glob("*.yaml"))


# -- helpers -----------------------------------------------------------------------------------------


def cosim(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cosim", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def write(tmp_path: Path, raw, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def assert_refused(r: subprocess.CompletedProcess, fragment: str) -> None:
    """Exit 2, one line starting ``error:`` that holds ``fragment``, no traceback."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert fragment in lines[0], lines[0]


def refused_by_validate_and_run(tmp_path: Path, path: Path, fragment: str, *sets: str) -> None:
    """`validate` and `run` both refuse, and `run` writes nothing."""
    args = [x for s in sets for x in ("--set", s)]
    assert_refused(cosim("validate", path, *args, cwd=tmp_path), fragment)
    out = tmp_path / "out"
    assert_refused(cosim("run", path, "--out", out, *args, cwd=tmp_path), fragment)
    assert not out.exists() and not (tmp_path / "runs").exists()


def refused(overrides: list[str], fragment: str, raw: dict | None = None) -> str:
    with pytest.raises(WorkloadError) as err:
        resolve(copy.deepcopy(raw or TINY), overrides)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg, msg
    return msg


def schema_keys(kind: str) -> list[str]:
    """Every key of the workload schema whose values are of ``kind`` (int, float or bool), by walking the
    pydantic models, so a key added later is covered too. Memory groups are spelled ``ddr4`` (TINY's)."""
    out: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            sub = next(
                (a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)),
                None,
            )
            if sub is not None and typing.get_origin(ann) is None:
                walk(sub, f"{prefix}{name}.")
            elif name == "memory":
                walk(MemoryGroup, f"{prefix}memory.ddr4.")
            else:
                kinds = _scalar_kinds(ann)
                if (
                    kind == "bool"
                    and kinds == {bool}
                    or kind in ("int", "float")
                    and bool not in kinds
                    and eval(kind) in kinds
                ):
                    out.append(prefix + name)

    walk(Workload, "")
    return out


FLOAT_KEYS = schema_keys("float")
INT_KEYS = schema_keys("int")
BOOL_KEYS = schema_keys("bool")


def test_the_schema_walk_finds_the_keys():
    assert {"policy.threshold", "hardware.memory.ddr4.bandwidth_GBps", "video.cfg_scale"} <= set(FLOAT_KEYS)
    assert {"hardware.power.static_W", "hardware.precision.kv_bits"} <= set(FLOAT_KEYS) | set(INT_KEYS)
    assert {"hardware.cores", "simulation.seed", "trace.seed", "trace.classes"} <= set(INT_KEYS)
    assert {"scheduler.drs", "video.cfg", "outputs.report"} <= set(BOOL_KEYS)


# -- 1. name -------------------------------------------------------------------------------------------

BAD_NAMES = ["", ".", "..", "../victim", "../../x", "a/b", "/abs", "-x", ".hidden", "a b", "x" * 65, "ü"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_names_are_refused(name):
    refused([], "name: not a plain file name", dict(TINY, name=name))


@pytest.mark.parametrize("name", ["a", "run-1.v2_x", "Q" * 64, "0start"])
def test_plain_names_pass(name):
    assert resolve(dict(TINY, name=name)).name == name


def test_name_outside_runs_writes_nothing(tmp_path):
    """Without --out the run directory is runs/<name>: `../victim` would land beside runs/."""
    path = write(tmp_path, dict(TINY, name="../victim"))
    r = cosim("run", path, cwd=tmp_path)
    assert_refused(r, "name: not a plain file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_workload_names_are_plain(path):
    raw = config.load_yaml(path)
    assert config.SAFE_NAME.fullmatch(raw["name"])
    assert resolve(raw).name == raw["name"]


# -- 2. non-finite numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [".nan", "nan", ".inf", "-.inf", "inf", "-Infinity"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused(key, value):
    extra = ["policy.target_replay_ratio=null"] if key == "policy.threshold" else []
    refused([f"{key}={value}", *extra], f"{key}: ")


@pytest.mark.parametrize("value", ["[-3, .nan, -3, -3]", "[-3, -3, .inf, -3]"])
def test_non_finite_per_layer_threshold_is_refused(value):
    msg = refused([f"policy.threshold={value}", "policy.target_replay_ratio=null"], "policy.threshold: ")
    assert "finite" in msg and "element" in msg


def test_nan_threshold_exits_2_instead_of_never_replaying(tmp_path):
    path = write(tmp_path, TINY)
    sets = ("policy.threshold=.nan", "policy.target_replay_ratio=null")
    refused_by_validate_and_run(tmp_path, path, "policy.threshold: must be a finite number", *sets)


@pytest.mark.parametrize("text", ["bandwidth_GBps: .inf", "bandwidth_GBps: .NaN"])
def test_non_finite_in_the_yaml_file(tmp_path, text):
    raw = dict(TINY)
    raw["hardware"] = {"preset": "kv260", "memory": {"ddr4": {"bandwidth_GBps": 1.0}}}
    body = yaml.safe_dump(raw).replace("bandwidth_GBps: 1.0", text)
    assert_refused(cosim("validate", write(tmp_path, body)), "hardware.memory.ddr4.bandwidth_GBps: ")


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(FLOAT_KEYS),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
def test_non_finite_python_floats_are_refused(key, value):
    """Same through resolve() with Python floats (as a sweep would pass them)."""
    raw = copy.deepcopy(TINY)
    node = raw
    parts = key.split(".")
    if key == "policy.threshold":
        raw["policy"]["target_replay_ratio"] = None
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    with pytest.raises(WorkloadError, match=key.replace(".", r"\.")):
        resolve(raw)


# -- 3. booleans are not numbers, numbers are not booleans ----------------------------------------------


@pytest.mark.parametrize("value", ["true", "false", "yes", "on"])
@pytest.mark.parametrize("key", INT_KEYS + FLOAT_KEYS)
def test_booleans_are_not_numbers(key, value):
    if key == "trace.classes":
        value = f"[{value}, 1]"
    extra = ["policy.target_replay_ratio=null"] if key == "policy.threshold" else []
    refused([f"{key}={value}", *extra], f"{key}: expected a number, not a boolean")


@pytest.mark.parametrize("value", ["1", "0", "2", "0.0", "'true'", "[true]"])
@pytest.mark.parametrize("key", BOOL_KEYS)
def test_numbers_are_not_booleans(key, value):
    refused([f"{key}={value}"], f"{key}: ")


@pytest.mark.parametrize("value, expected", [("no", False), ("yes", True), ("false", False), ("on", True)])
def test_yaml_booleans_still_work(value, expected):
    assert resolve(copy.deepcopy(TINY), [f"scheduler.drs={value}"]).scheduler.drs is expected


def test_cores_true_exits_2(tmp_path):
    refused_by_validate_and_run(
        tmp_path, write(tmp_path, TINY), "hardware.cores: expected a number", "hardware.cores=true"
    )


def test_numbers_still_accept_yaml_1_1_exponents():
    """YAML 1.1 reads ``1e9`` as a string; a numeric key still takes it as a number."""
    w = resolve(copy.deepcopy(TINY), ["hardware.memory.ddr4.bandwidth_GBps=1e9"])
    assert w.hardware.memory["ddr4"].bandwidth_GBps == 1e9


# -- 4. seeds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["simulation.seed", "trace.seed"])
@pytest.mark.parametrize("value", [-1, 2**32, 10**30])
def test_seeds_out_of_range_are_refused(key, value):
    refused([f"{key}={value}"], f"{key}: ")


def test_largest_seed_runs():
    from cosim.traces import load_trace

    w = resolve(copy.deepcopy(TINY), [f"simulation.seed={2**32 - 1}", f"trace.seed={2**32 - 1}"])
    assert load_trace(w).trace.replay_ratio() > 0


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_cli_seed_flag_is_checked_like_the_key(tmp_path, seed):
    out = tmp_path / "out"
    r = cosim("run", write(tmp_path, TINY), "--out", out, f"--seed={seed}")
    assert_refused(r, "simulation.seed: ")
    assert not out.exists()


# -- 5. YAML files: duplicate keys, encodings, nesting ----------------------------------------------------


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("version: 1\nname: a\nname: b\nmodel: {preset: tiny}\n", "duplicate key 'name' (first at line 2)"),
        (
            "version: 1\nmodel: {preset: tiny}\nvideo:\n  frames: 4\n  prompts: 2\n  frames: 8\n",
            "(line 6, column 3): duplicate key 'frames' (first at line 4)",
        ),
        ("version: 1\nmodel: {preset: tiny, preset: kv260}\n", "duplicate key 'preset'"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(WorkloadError, match="duplicate key") as err:
        load_workload(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_duplicate_key_exits_2(tmp_path):
    path = write(tmp_path, yaml.safe_dump(TINY) + "name: again\n")
    refused_by_validate_and_run(tmp_path, path, "duplicate key 'name'")


def test_merge_keys_may_override(tmp_path):
    text = yaml.safe_dump({k: v for k, v in TINY.items() if k != "video"})
    text += "base: &b {frames: 4, tokens_per_frame: 16, prompts: 2}\n"
    text = text.replace("base:", "x-base:")
    text += "video:\n  <<: *b\n  prompts: 1\n"
    raw = config.load_yaml(write(tmp_path, text))
    assert raw["video"]["prompts"] == 1 and raw["video"]["frames"] == 4


def test_duplicate_key_in_a_preset_file(tmp_path, monkeypatch):
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "dup.yaml").write_text("hardware:\n  cores: 2\n  cores: 4\n")
    monkeypatch.setattr(config, "BOARD_PRESETS_DIR", boards)
    with pytest.raises(
        WorkloadError, match=r"dup\.yaml: malformed YAML \(line 3, column 3\): duplicate key 'cores'"
    ):
        resolve(dict(TINY, hardware={"preset": "dup"}))


def test_duplicate_key_in_a_set_value():
    with pytest.raises(WorkloadError, match="--set hardware.memory: .*duplicate key 'ddr4'"):
        resolve(
            copy.deepcopy(TINY), ["hardware.memory={ddr4: {bandwidth_GBps: 1}, ddr4: {bandwidth_GBps: 2}}"]
        )


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"version: 1\nname: \xff\xfe\n", "not UTF-8 text (byte 0xff at line 2"),
        ("version: 1\nname: caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at line 2"),
        ("version: 1\nname: x\n".encode("utf-16"), "not UTF-8 text (byte 0xff at line 1"),
    ],
)
def test_non_utf8_files_are_refused(tmp_path, data, fragment):
    path = tmp_path / "w.yaml"
    path.write_bytes(data)
    assert_refused(cosim("validate", path), f"{path}: {fragment}")


def test_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(TINY).encode())
    assert load_workload(path).name == "tiny"


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        "version: 1\nname: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "".join(f"{'  ' * i}k{i}:\n" for i in range(2000)),
        "a: " + "{b: " * 5000 + "1" + "}" * 5000,
    ],
    ids=["lists", "nested-value", "block-maps", "flow-maps"],
)
def test_deep_nesting_is_refused(tmp_path, text):
    path = write(tmp_path, text)
    r = cosim("validate", path)
    assert_refused(r, f"{path}: malformed YAML")
    assert "nested deeper than 32 levels" in r.stderr


def test_deep_nesting_in_a_set_value():
    with pytest.raises(WorkloadError, match="--set name: .*nested deeper"):
        resolve(copy.deepcopy(TINY), ["name=" + "[" * 5000 + "]" * 5000])


def test_unreadable_file(tmp_path, monkeypatch):
    """As root every file is readable, so the denial is simulated where the loader reads."""
    path = write(tmp_path, TINY)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(WorkloadError, match="cannot read: Permission denied"):
        load_workload(path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_resolved_workloads_read_back_unchanged(tmp_path, path):
    """config.resolved.yaml of a run is itself a valid workload that resolves to the same thing."""
    w = resolve(config.load_yaml(path))
    again = resolve(config.parse_yaml(config.dump_resolved(w)))
    assert again == w


# -- 6. each policy's required settings: validate and run agree ---------------------------------------------


def _trace_file(tmp_path: Path) -> Path:
    """A trace.parquet whose decisions were made by a tas policy (TINY's shape)."""
    out = tmp_path / "src"
    r = cosim("run", write(tmp_path, TINY, "src.yaml"), "--out", out)
    assert r.returncode == 0, r.stderr
    return out / "trace.parquet"


POLICY_CASES = [
    # (policy, trace, expected exit code of both validate and run)
    ({"kind": "tas"}, {"source": "synthetic"}, 2),
    ({"kind": "tas", "threshold": None, "target_replay_ratio": None}, {"source": "synthetic"}, 2),
    ({"kind": "topk"}, {"source": "synthetic"}, 2),
    ({"kind": "random"}, {"source": "synthetic"}, 2),
    ({"kind": "oracle"}, {"source": "capture"}, 2),
    ({"kind": "input_similarity"}, {"source": "capture"}, 2),
    ({"kind": "input_similarity", "threshold": [0.1] * 4}, {"source": "capture"}, 2),
    ({"kind": "input_similarity", "threshold": 0.1, "target_replay_ratio": 0.5}, {"source": "capture"}, 2),
    ({"kind": "tas", "threshold": -3.0}, {"source": "synthetic"}, 0),
    ({"kind": "topk", "target_replay_ratio": 0.5}, {"source": "synthetic"}, 0),
    ({"kind": "random", "target_replay_ratio": 0.5}, {"source": "synthetic"}, 0),
    ({"kind": "fixed_interval"}, {"source": "synthetic"}, 0),
    ({"kind": "dense"}, {"source": "synthetic"}, 0),
    # a trace file decided by tas: neither setting means "keep the stored decisions" (docs/traces.md)
    ({"kind": "tas"}, {"source": "file", "path": "TRACE"}, 0),
]


@pytest.mark.parametrize("policy, trace, code", POLICY_CASES)
def test_validate_and_run_agree_on_policies(tmp_path, policy, trace, code):
    raw = dict(TINY, policy=policy, trace=dict(trace))
    if trace.get("path") == "TRACE":
        raw["trace"]["path"] = str(_trace_file(tmp_path))
    if trace["source"] == "capture":
        raw["model"] = {"preset": "fastcar-tiny"}
        raw["video"] = {"frames": 2, "prompts": 1, "tokens_per_frame": 64}
    path = write(tmp_path, raw)
    v = cosim("validate", path)
    r = cosim("run", path, "--out", tmp_path / "out")
    assert v.returncode == r.returncode == code, (v.stderr, r.stderr)
    if code == 2:
        assert_refused(v, "policy")
        assert v.stderr == r.stderr


def test_zero_target_replays_nothing_with_a_finite_tau(tmp_path):
    """A 0% target gives a tau above every score; +inf would be refused by the trace metadata (and JSON),
    so `run` failed where `validate` passed."""
    import numpy as np

    from cosim.traces import threshold_for_ratio

    tas = np.array([[-3.5, np.nan, 2.25, np.float32(1e30)]], dtype=np.float32)
    tau = threshold_for_ratio(tas, 0.0)
    assert np.isfinite(tau) and not (tas >= tau).any() and not (tas.astype(np.float64) >= tau).any()
    out = tmp_path / "out"
    r = cosim("run", write(tmp_path, TINY), "--out", out, "--set", "policy.target_replay_ratio=0")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replay_ratio"] == 0 and summary["tau"] is not None


# -- 7. batch over 32 with the static mapping ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["event", "analytic"])
def test_static_mapping_has_no_32_entry_limit(mode):
    from cosim.simulate import simulate
    from cosim.traces import load_trace

    w = resolve(copy.deepcopy(TINY), ["video.prompts=20", "scheduler.drs=false", f"simulation.mode={mode}"])
    assert w.video.batch == 40
    s = simulate(w, load_trace(w)).summary
    assert s["batch"] == 40 and s["drs_events"] == 0 and s["speedup_vs_dense"] > 1


def test_static_mapping_batch_40_runs_from_the_cli(tmp_path):
    out = tmp_path / "out"
    r = cosim(
        "run",
        write(tmp_path, TINY),
        "--out",
        out,
        "--set",
        "video.prompts=20",
        "--set",
        "scheduler.drs=false",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["batch"] == 40


def test_drs_over_32_entries_is_refused_with_the_way_out(tmp_path):
    refused_by_validate_and_run(
        tmp_path, write(tmp_path, TINY), "scheduler.drs: false", "video.prompts=20", "scheduler.drs=true"
    )


# -- 8. presets are names, not paths ------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["model", "hardware"])
@pytest.mark.parametrize(
    "form", ["{dir}/x", "../boards/kv260", "../models/tiny", "kv260.yaml", "./tiny", "boards/kv260", "", ".x"]
)
def test_preset_paths_are_refused(tmp_path, section, form):
    (tmp_path / "x.yaml").write_text(
        "hardware: {cores: 4}\nmodel: {layers: 1, hidden: 8, heads: 1, mlp_hidden: 8}\n"
    )
    name = form.format(dir=tmp_path)
    raw = copy.deepcopy(TINY)
    raw[section] = {"preset": name}
    refused([], f"{section}.preset: unknown preset {name!r}", raw)


def test_preset_path_exits_2(tmp_path):
    (tmp_path / "x.yaml").write_text("hardware: {cores: 4}\n")
    path = write(tmp_path, TINY)
    refused_by_validate_and_run(
        tmp_path, path, "hardware.preset: unknown preset", f"hardware.preset={tmp_path}/x"
    )


@pytest.mark.parametrize("kind", ["model", "board"])
def test_shipped_preset_names_are_plain(kind):
    assert preset_names(kind) and all(config.SAFE_NAME.fullmatch(n) for n in preset_names(kind))


# -- 9. memory capacity --------------------------------------------------------------------------------------


def _expected_bytes(w) -> dict[str, float]:
    """Hand formula from the model's parameter count (models.dims), not from the cost model."""
    m, v, hw = w.model, w.video, w.hardware
    p = hw.precision
    need = {g: 0.0 for g in hw.memory}
    need[hw.placement.weights] += m.layers * m.layer_params * p.weights_bits / 8
    ctx = v.prompt_tokens + v.frames * v.tokens_per_frame
    need[hw.placement.kv_cache] += v.batch * ctx * m.layers * 2 * m.kv_heads * m.head_dim * p.kv_bits / 8
    if w.policy.kind != "dense":
        need[hw.placement.replay_cache] += (
            v.batch * m.layers * v.tokens_per_frame * m.hidden * p.replay_cache_bits / 8
        )
    return need


def test_vila_u_7b_bytes_by_hand():
    """VILA-U 7B, batch 10, 8 x 256 tokens + 16 prompt tokens on the U280 placement, int8 weights and
    fp16 KV and replay caches."""
    bits = ["weights_bits=8", "kv_bits=16", "replay_cache_bits=16"]
    w = resolve(load_yaml_shipped("fastcar_vilau7b_u280.yaml"), [f"hardware.precision.{b}" for b in bits])
    use = memory_use(w)
    hbm = {h.what: h.bytes for h in use["hbm"].holdings}
    # 32 layers x (4096 x (2 x 4096 + 2 x 4096) + 3 x 4096 x 11008) weights at 8 bits
    assert hbm["weights"] == 32 * (4096 * 16384 + 3 * 4096 * 11008)
    # K and V of 4096 at 16 bits, 2064 tokens, 32 layers, batch 10
    assert hbm["KV cache"] == 10 * 2064 * 32 * 2 * 4096 * 2
    ddr4 = {h.what: h.bytes for h in use["ddr4"].holdings}
    assert ddr4 == {"replay cache": 10 * 32 * 256 * 4096 * 2}


def load_yaml_shipped(name: str) -> dict:
    return config.load_yaml(ROOT / "workloads" / name)


@pytest.mark.parametrize("model", preset_names("model"))
@pytest.mark.parametrize("board", preset_names("board"))
def test_every_preset_pair_fits_or_names_the_group(model, board):
    """Default video settings, a replaying policy: the check agrees with the hand formula, and a design
    that does not fit names the group, what it needs (with the breakdown) and what it has."""
    raw = {"version": 1, "model": {"preset": model}, "hardware": {"preset": board}}
    w = resolve({**raw, "policy": {"kind": "tas", "target_replay_ratio": 0.5}})
    need = _expected_bytes(w)
    short = [g for g, b in need.items() if b > w.hardware.memory[g].capacity_GiB * GIB]
    if not short:
        check_capacity(w)
        return
    with pytest.raises(CapacityError) as err:
        check_capacity(w)
    msg = str(err.value)
    for g in short:
        assert f"hardware.memory.{g}.capacity_GiB: too small: needs {need[g] / GIB:.4g} GiB" in msg
        assert f"has {w.hardware.memory[g].capacity_GiB:.4g} GiB" in msg
    assert "weights" in msg or "KV cache" in msg or "replay cache" in msg


@pytest.mark.parametrize("model", ["tiny", "fastcar-tiny"])
@pytest.mark.parametrize("board", preset_names("board"))
def test_small_models_fit_every_board(model, board):
    check_capacity(
        resolve(
            {
                "version": 1,
                "model": {"preset": model},
                "hardware": {"preset": board},
                "policy": {"kind": "dense"},
            }
        )
    )


def test_big_model_on_a_small_board_does_not_fit():
    w = resolve(
        {
            "version": 1,
            "model": {"preset": "cosmos-ar-12b"},
            "hardware": {"preset": "kv260"},
            "policy": {"kind": "dense"},
        }
    )
    with pytest.raises(
        CapacityError,
        match=r"hardware\.memory\.ddr4\.capacity_GiB: too small: needs .* = weights 5\.322 GiB \(40 layers at 4 bits\) \+ KV cache",
    ):
        check_capacity(w)


def test_replay_cache_counts_only_when_replaying():
    """Cosmos 4B on the ZCU102: only the 0.625 GiB replay cache overflows the 0.5 GiB PL DDR4."""
    raw = {"version": 1, "model": {"preset": "cosmos-ar-4b"}, "hardware": {"preset": "zcu102"}}
    check_capacity(resolve({**raw, "policy": {"kind": "dense"}}))
    with pytest.raises(
        CapacityError, match=r"pl_ddr4\.capacity_GiB: too small: needs 0\.625 GiB = replay cache"
    ):
        check_capacity(resolve({**raw, "policy": {"kind": "tas", "threshold": -3.0}}))


def test_capacity_error_is_a_workload_error():
    assert issubclass(CapacityError, WorkloadError)


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (
            ["hardware.memory.ddr4.capacity_GiB=9.5367431640625e-07"],
            "hardware.memory.ddr4.capacity_GiB: too small",
        ),
        (["video.prompt_tokens=2000000000"], "KV cache"),
        (["video.prompt_tokens=1000000000000"], "video.prompt_tokens: Input should be less than or equal to"),
    ],
    ids=["1KiB", "2e9-prompt-tokens", "1e12-prompt-tokens"],
)
def test_capacity_exits_2_in_validate_and_run(tmp_path, sets, fragment):
    refused_by_validate_and_run(tmp_path, write(tmp_path, TINY), fragment, *sets)


def test_capacity_is_checked_by_load_workload_not_by_resolve(tmp_path):
    """resolve() is the schema alone (a sweep records an infeasible point from CapacityError)."""
    w = resolve(copy.deepcopy(TINY), ["hardware.memory.ddr4.capacity_GiB=1e-6"])
    with pytest.raises(CapacityError):
        check_capacity(w)
    with pytest.raises(CapacityError):
        load_workload(write(tmp_path, TINY), ["hardware.memory.ddr4.capacity_GiB=1e-6"])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_workloads_fit_their_boards(path):
    check_capacity(resolve(config.load_yaml(path)))


# -- 10. host memory -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["video.frames=1000000"], "video.frames: Input should be less than or equal to 32767"),
        (["model.layers=100000"], "model.layers: Input should be less than or equal to 32767"),
        (
            ["video.tokens_per_frame=100000000", "hardware.memory.ddr4.capacity_GiB=1e9"],
            "too large to simulate here",
        ),
        (
            ["model.layers=30000", "video.tokens_per_frame=100000", "hardware.memory.ddr4.capacity_GiB=1e9"],
            "too large to simulate here",
        ),
    ],
    ids=["frames", "layers", "tokens", "layers-x-tokens"],
)
def test_oversized_dimensions_are_refused(tmp_path, sets, fragment):
    refused_by_validate_and_run(tmp_path, write(tmp_path, TINY), fragment, *sets)


def test_host_memory_message_names_keys_and_estimate(monkeypatch):
    monkeypatch.setattr(config, "host_memory_bytes", lambda: 1 << 30)
    w = resolve(
        copy.deepcopy(TINY), ["video.tokens_per_frame=1000000", "hardware.memory.ddr4.capacity_GiB=1e3"]
    )
    with pytest.raises(WorkloadError) as err:
        check_host_memory(w, origin="w.yaml")
    msg = str(err.value)
    assert msg.startswith(
        "w.yaml: video.prompts x model.layers x video.frames x video.tokens_per_frame: too large"
    )
    assert "this machine has 1 GiB" in msg and "64,000,000 rows x 300 B" in msg and "\n" not in msg


def test_capture_memory_is_estimated_too(monkeypatch):
    """A live capture of a huge batch is refused before PyTorch allocates its KV cache."""
    raw = config.load_yaml(ROOT / "workloads" / "quickstart.yaml")
    w = resolve(raw, ["video.prompts=1000000", "trace.classes=null", "scheduler.drs=false"])
    need, breakdown = host_memory_estimate(w)
    assert "capture" in breakdown and need > 6 * 10**6 * 8 * 64 * 8  # rows x 8 x kv_dim at least
    monkeypatch.setattr(config, "host_memory_bytes", lambda: need - 1)
    with pytest.raises(WorkloadError, match="too large to simulate here"):
        check_host_memory(w)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("mode", ["analytic", "event", "instruction"])
def test_estimate_bounds_the_measured_peak(tmp_path, mode):
    """A mid-size run (0.5M trace rows) in a fresh process: its peak RSS stays under the estimate, and the
    estimate is not absurdly high either. The peak is VmHWM (this process image's high-water mark):
    ru_maxrss would also count the forking parent's memory, which survives exec."""
    sets = [
        "video.tokens_per_frame=2048",
        "video.prompts=8",
        f"simulation.mode={'event' if mode == 'instruction' else mode}",
        f"simulation.granularity={'instruction' if mode == 'instruction' else 'phase'}",
        "outputs.report=false",
    ]
    w = resolve(copy.deepcopy(TINY), sets)
    estimate, _ = host_memory_estimate(w)
    args = [x for s in sets for x in ("--set", s)]
    path = write(tmp_path, TINY)
    code = (
        "import re, sys; from pathlib import Path; from cosim.cli import main; "
        f"rc = main(['run', {str(path)!r}, '--out', {str(tmp_path / 'out')!r}, *{args!r}]); "
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())[1]) * 1024); "
        "sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    peak = int(r.stdout.split()[-1])
    assert peak < estimate < 4 * peak, (peak, estimate)


# -- 11. bounds that keep the simulator's arithmetic exact and its results finite ----------------------------


@pytest.mark.parametrize(
    "override, fragment",
    [
        (
            "trace.synthetic.noise=1.0e+300",
            "trace.synthetic.noise: Input should be less than or equal to 1000",
        ),
        ("trace.synthetic.motion_drop=1.0e+300", "trace.synthetic.motion_drop: "),
        ("trace.synthetic.depth_profile=1.0e+300", "trace.synthetic.depth_profile: "),
        ("trace.synthetic.cfg_noise=1.0e+300", "trace.synthetic.cfg_noise: "),
        ("hardware.clock_MHz=1e-300", "hardware.clock_MHz: "),
        ("hardware.memory.ddr4.bandwidth_GBps=1e-300", "hardware.memory.ddr4.bandwidth_GBps: "),
        ("hardware.memory.ddr4.efficiency=1e-300", "hardware.memory.ddr4.efficiency: "),
        ("hardware.power.static_W=1.0e+300", "hardware.power.static_W: "),
        ("hardware.memory.ddr4.energy_pJ_per_byte=1.0e+300", "hardware.memory.ddr4.energy_pJ_per_byte: "),
        ("hardware.memory.ddr4.capacity_GiB=1.0e+300", "hardware.memory.ddr4.capacity_GiB: "),
        ("hardware.lanes_per_core=1000000000000", "hardware.lanes_per_core: "),
        ("model.hidden=1000000000000", "model.hidden: "),
        ("model.head_dim=1048576", "heads x head_dim = 4194304 exceeds 1048576"),
        ("model.extra_macs_per_token=1000000000000000", "model.extra_macs_per_token: "),
        ("video.tokens_per_frame=3000000000", "video.tokens_per_frame: "),
        ("video.frames=32767", "frames x tokens_per_frame = 524272 decode steps"),  # with 16 tokens: fine
        ("sparse_attention.window=1000000000000", "sparse_attention.window: "),
        ("sparse_attention.sink_tokens=1000000000000", "sparse_attention.sink_tokens: "),
        ("scheduler.overhead_cycles=1000000000000", "scheduler.overhead_cycles: "),
        ("policy.interval=1000000000000", "policy.interval: "),
        ("policy.staleness_cap=1000000000000", "policy.staleness_cap: "),
        ("outputs.timeline_steps=1000000000000", "outputs.timeline_steps: "),
        ("trace.classes=[-1, 0]", "trace.classes: class ids are >= 0"),
        ("trace.classes=[]", "trace.classes: needs at least one class id"),
        ("trace.classes=[0, 1, 2]", "trace.classes: 3 class ids for video.prompts = 2 prompts"),
        ("hardware.memory={'a b': {bandwidth_GBps: 1}}", "group name 'a b'"),
        ("policy.threshold=[-3, -3, -3, -3]", "set threshold or target_replay_ratio, not both"),
    ],
)
def test_bounds(override, fragment):
    if fragment.startswith("frames x tokens_per_frame"):
        assert resolve(copy.deepcopy(TINY), [override]).video.steps == 524272
        refused([override, "video.tokens_per_frame=100000"], "video: frames x tokens_per_frame = 3276700000")
        return
    refused([override], fragment)


def test_memory_needs_a_group():
    refused([], "hardware.memory: needs at least one memory group", dict(TINY, hardware={"memory": {}}))


def test_per_layer_threshold_is_for_tas_only():
    refused(
        ["policy.kind=fixed_interval", "policy.threshold=[1, 1, 1, 1]"],
        "policy.threshold: one value per layer is for kind tas, not fixed_interval",
    )


def test_error_in_a_union_names_the_key_not_the_member():
    msg = refused(
        ["policy.threshold=[-3, abc, -3, -3]", "policy.target_replay_ratio=null"], "policy.threshold.1: "
    )
    assert "list[float]" not in msg
    msg = refused(["policy.threshold=abc", "policy.target_replay_ratio=null"], "policy.threshold: ")
    assert ".float" not in msg
