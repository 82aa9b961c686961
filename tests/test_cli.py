"""The CLI contract: run directory contents, direction of --set changes, bad input handling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_workload import TINY

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "workloads" / "fastcar_vilau7b_u280.yaml"
RUN_FILES = {
    "config.resolved.yaml",
    "summary.json",
    "layers.csv",
    "trace.parquet",
    "timeline.json",
    "report.html",
}


def cosim(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cosim", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def write(tmp_path, raw, name="w.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_writes_every_file(tmp_path):
    raw = dict(TINY, outputs={"report": True, "timeline_steps": 2})
    out = tmp_path / "run"
    r = cosim("run", write(tmp_path, raw), "--out", out)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "latency_s",
        "dense_latency_s",
        "speedup_vs_dense",
        "replay_ratio",
        "energy_j",
        "avg_power_w",
        "tokens_per_s",
        "core_utilization",
        "memory_bandwidth_utilization",
        "breakdown_s",
    ):
        assert key in summary
    assert sum(summary["breakdown_s"].values()) == pytest.approx(summary["latency_s"])
    timeline = json.loads((out / "timeline.json").read_text())
    assert any(e["ph"] == "X" and e["name"] == "mlp" for e in timeline["traceEvents"])
    assert "synthetic" in summary["trace_label"] and "latency" in r.stdout
    assert summary["fits_board"] and summary["resources_estimate"]["dsps"] > 0
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".")]) == 0  # no temp dirs left


@pytest.mark.parametrize(
    "contents, fragment",
    [
        ("version: 1\nmodel: {preset: tiny\n", "malformed YAML"),
        (None, "hardware.wattage: unknown key"),
        (None, "hardware.cores: Input should be a valid integer"),
        (None, "hardware.memory.ddr4.bandwidth_GBps: Input should be greater than 0"),
        (None, "trace.path: trace file not found"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, contents, fragment):
    raw = dict(TINY)
    if fragment.startswith("hardware.wattage"):
        raw["hardware"] = {"preset": "kv260", "wattage": 3}
    elif fragment.startswith("hardware.cores"):
        raw["hardware"] = {"preset": "kv260", "cores": "many"}
    elif "bandwidth" in fragment:
        raw["hardware"] = {"preset": "kv260", "memory": {"ddr4": {"bandwidth_GBps": -19.2}}}
    elif fragment.startswith("trace.path"):
        raw["trace"] = {"source": "file", "path": str(tmp_path / "missing.parquet")}
    path = tmp_path / "w.yaml"
    path.write_text(contents if contents is not None else yaml.safe_dump(raw))
    out = tmp_path / "out"
    r = cosim("run", path, "--out", out)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.yaml"]


def test_validate_schema_presets():
    r = cosim("validate", PAPER, "--set", "hardware.cores=4")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["hardware"]["cores"] == 4
    assert "bandwidth_GBps" in cosim("schema").stdout
    assert "alveo-u280" in cosim("presets").stdout
    r = cosim("validate", PAPER, "--set", "nonsense")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


def paper(tmp_path, *sets, mode="analytic"):
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
    args = ["run", PAPER, "--out", out, "--set", f"simulation.mode={mode}", "--set", "outputs.report=false"]
    for s in sets:
        args += ["--set", s]
    r = cosim(*args)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "summary.json").read_text())


def test_paper_overrides_move_the_result_in_the_expected_direction(tmp_path):
    base = paper(tmp_path)
    assert base["speedup_vs_dense"] > 1.3
    more_replay = paper(tmp_path, "policy.target_replay_ratio=0.8")
    assert more_replay["replay_ratio"] == pytest.approx(0.8) and more_replay["latency_s"] < base["latency_s"]
    huge = paper(tmp_path, "hardware.lanes_per_core=8192")
    assert (
        huge["latency_s"] < base["latency_s"]
        and not huge["fits_board"]
        and "dsps" in huge["fits_board_detail"]
    )
    static = paper(tmp_path, "scheduler.drs=false")
    assert static["latency_s"] > base["latency_s"] and static["drs_events"] == 0
    sparse = paper(tmp_path, "sparse_attention.window=16")
    assert sparse["latency_s"] < base["latency_s"] and sparse["dense_latency_s"] < base["dense_latency_s"]
    assert sparse["dense_full_attention_latency_s"] == pytest.approx(base["dense_latency_s"])
    assert sparse["speedup_vs_dense_full_attention"] > sparse["speedup_vs_dense"]
    event = paper(tmp_path, mode="event")
    assert event["latency_s"] == pytest.approx(base["latency_s"], rel=0.01)


def test_report_rebuilds_from_the_run_directory(tmp_path):
    out = tmp_path / "run"
    assert cosim("run", write(tmp_path, TINY), "--out", out).returncode == 0
    assert not (out / "report.html").exists()
    r = cosim("report", out)
    assert r.returncode == 0 and (out / "report.html").is_file()
    assert cosim("report", tmp_path).returncode == 2


def test_program_lists_the_compiled_stream_with_its_costs():
    from accelerator.isa import Op, decode

    # the hand count below is for 2 cores with 8-MiB operand buffers (the U280 design before its four-row
    # calibration); the compiler's rules are the same for the shipped 3 cores
    two_cores = ("--set", "hardware.cores=2", "--set", "hardware.weight_buffer_KiB=8192")
    r = cosim("program", PAPER, *two_cores)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if not line.startswith("#")]
    # Frame 1 of the paper layer: 3 qkv + 1 o blocks per core, 2 TAS, 10 ATTN, DRS, read, 6 up + 4 down
    # blocks (mapped), write, SYNC = 8 + 2 + 10 + 1 + 1 + 10 + 1 + 1 = 34.
    assert len(lines) == 34
    words = [decode(int(line.split()[0], 16)) for line in lines]
    assert [w.op for w in words].count(Op.ATTN) == 10 and words[-1].op == Op.SYNC
    # The first qkv block on core 0: 5 entries x (8 tiles of 512 rows x 4096 columns + 3 fill cycles),
    # then the last tile's 512 outputs drained one per cycle and the writer's 2 stages: 163,855 + 514.
    assert "164,369 cycles" in lines[0] and "8,388,608 B hbm" in lines[0]
    frame0 = cosim("program", PAPER, "--step", "0")
    assert "TAS" not in frame0.stdout and "DRS" not in frame0.stdout
    bad = cosim("program", PAPER, "--step", "2048")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--step" in bad.stderr
