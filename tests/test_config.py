from pathlib import Path

import pytest

from cosim.config import WorkloadError, load_workload, preset_names, resolve

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("model", preset_names("model"))
@pytest.mark.parametrize("board", preset_names("board"))
def test_every_preset_pair_resolves(model, board):
    policy = {"kind": "tas", "target_replay_ratio": 0.5}  # a tas policy states its threshold or target
    w = resolve({"version": 1, "model": {"preset": model}, "hardware": {"preset": board}, "policy": policy})
    assert w.model.layers > 0 and w.hardware.cores > 0
    assert w.hardware.placement.weights in w.hardware.memory
    assert w.model.source and w.hardware.source  # every preset names where its numbers come from


def test_required_presets_exist():
    assert {
        "vila-u-7b-256",
        "vila-u-7b-384",
        "lwm-7b",
        "emu3-8b",
        "cosmos-ar-4b",
        "cosmos-ar-12b",
        "tiny",
    } <= set(preset_names("model"))
    assert {"alveo-u280", "vck190", "zcu102", "kv260"} <= set(preset_names("board"))


def test_model_preset_sets_video_defaults_user_keys_win():
    base = {"version": 1, "model": {"preset": "vila-u-7b-384"}, "policy": {"kind": "dense"}}
    w = resolve(base)
    assert w.video.tokens_per_frame == 729
    w = resolve({**base, "video": {"tokens_per_frame": 100}})
    assert w.video.tokens_per_frame == 100


def test_set_overrides_with_types(tiny_raw):
    w = resolve(tiny_raw, ["hardware.cores=8", "policy.target_replay_ratio=0.6", "scheduler.drs=false"])
    assert w.hardware.cores == 8 and w.policy.target_replay_ratio == 0.6 and w.scheduler.drs is False
    w = resolve(tiny_raw, ["hardware.memory.ddr4.bandwidth_GBps=40"])
    assert w.hardware.memory["ddr4"].bandwidth_GBps == 40
    assert w.hardware.memory["ddr4"].efficiency == 0.85  # the rest of the preset's group survives


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("hardware.memory.ddr4.bandwidth_GBps=-5", "hardware.memory.ddr4.bandwidth_GBps"),
        ("hardware.cores=two", "hardware.cores"),
        ("hardware.colour=red", "hardware.colour: unknown key"),
        ("policy.target_replay_ratio=0.9", "exceeds the maximum (T-1)/T = 0.75"),
        ("hardware.preset=nope", "hardware.preset: unknown preset 'nope'"),
        ("policy.kind=oracle", "trace.source: capture"),
        ("trace.source=file", "trace.path: required"),
        ("hardware.placement.weights=hbm", "placement.weights names memory group 'hbm'"),
        ("version=2", "version"),
        ("policy.threshold=-4", "set threshold or target_replay_ratio, not both"),
        ("hardware.precision.weights_bits=7", "weights_bits must be one of"),
    ],
)
def test_bad_values_name_the_key(tiny_raw, override, fragment):
    with pytest.raises(WorkloadError) as err:
        resolve(tiny_raw, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: [unclosed\n")
    with pytest.raises(WorkloadError, match="malformed YAML"):
        load_workload(bad)
    with pytest.raises(WorkloadError, match="file not found"):
        load_workload(tmp_path / "missing.yaml")


def test_shipped_workloads_validate():
    for path in (ROOT / "workloads").glob("*.yaml"):
        assert load_workload(path).version == 1


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        "version: 1\nname: !!python/object/apply:os.system ['echo pwned']\nmodel: {preset: tiny}\n"
    )
    with pytest.raises(WorkloadError):
        load_workload(evil)


def test_relative_trace_paths_are_relative_to_the_workload_file(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    path = sub / "w.yaml"
    path.write_text("version: 1\nmodel: {preset: tiny}\ntrace: {source: file, path: t.parquet}\n")
    assert load_workload(path).trace.path == str(sub / "t.parquet")


def test_per_layer_threshold_needs_one_value_per_layer(tiny_raw):
    tiny_raw["policy"] = {"kind": "tas", "threshold": [-3.0, -3.0, -3.0, -3.0]}
    assert resolve(tiny_raw).policy.threshold == [-3.0] * 4
    tiny_raw["policy"]["threshold"] = [-3.0, -3.0]
    with pytest.raises(WorkloadError, match="2 per-layer values for 4 layers"):
        resolve(tiny_raw)
