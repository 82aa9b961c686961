"""Output directories: a command replaces only what it recognisably wrote itself, atomically, under a lock,
and says so before any work when it cannot write somewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_workload import TINY

from cosim import outdir
from cosim.outdir import MARKER, OutputError, claim

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "workloads" / "quickstart.yaml"
PAPER = ROOT / "workloads" / "fastcar_vilau7b_u280.yaml"


def cosim(*args, cwd=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "cosim", *map(str, args)], capture_output=True, text=True, cwd=cwd, **kw
    )


def tiny_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` with its size and modification time: what "untouched" means."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def assert_refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


# Every command that writes a directory, pointed at a directory the user owns (the "done means").
WRITERS = {
    "run": lambda wl, out: ("run", wl, "--out", out),
    "capture": lambda wl, out: ("capture", QUICKSTART, "--out", out),
    "rtl export": lambda wl, out: ("rtl", "export", "--out", out),
    "report": lambda wl, out: ("report", out),
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_user_files_survive_every_writing_command(tmp_path, command):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    (mine / "summary.json").write_text("{}")  # looks like a run to a careless check, is the user's
    (mine / "report.html").write_text("<p>my own report</p>")
    args = WRITERS[command](tiny_file(tmp_path), mine)
    before = tree(tmp_path)
    assert_refused(cosim(*args, cwd=tmp_path), "mine")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["run", "capture", "rtl export"])
@pytest.mark.parametrize("where", [".", "..", "sub/../.."])
def test_working_directory_and_parents_are_never_outputs(tmp_path, command, where):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "precious.txt").write_text("x")
    args = WRITERS[command](tiny_file(work), where)
    before = tree(tmp_path)
    r = cosim(*args, "--force", cwd=work)  # not even with --force
    assert_refused(r, "refusing to write there")
    assert tree(tmp_path) == before


def test_project_sources_are_never_outputs(tmp_path):
    r = cosim("run", tiny_file(tmp_path), "--out", ROOT / "docs", "--force", cwd=tmp_path)
    assert_refused(r, "project")
    assert (ROOT / "docs" / "metrics.md").is_file()


def test_earlier_run_is_replaced_foreign_file_refused_force_replaces(tmp_path):
    wl, out = tiny_file(tmp_path), tmp_path / "out"
    assert cosim("run", wl, "--out", out).returncode == 0
    assert json.loads((out / MARKER).read_text())["kind"] == "run"
    r = cosim("run", wl, "--out", out)
    assert r.returncode == 0 and "replaced an earlier run output" in r.stdout
    (out / "notes.txt").write_text("mine")
    assert_refused(cosim("run", wl, "--out", out), "notes.txt", "--force")
    assert (out / "notes.txt").read_text() == "mine"
    r = cosim("run", wl, "--out", out, "--force")
    assert r.returncode == 0 and "--force" in r.stdout
    assert not (out / "notes.txt").exists()


def test_an_output_of_another_kind_is_not_replaced(tmp_path):
    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / MARKER).write_text(json.dumps({"tool": outdir.TOOL, "kind": "capture"}))
    (cap / "quality.json").write_text("{}")
    assert_refused(cosim("run", tiny_file(tmp_path), "--out", cap), "capture output")


def test_run_directory_written_before_markers_is_recognised(tmp_path):
    wl, out = tiny_file(tmp_path), tmp_path / "old-run"
    assert cosim("run", wl, "--out", out).returncode == 0
    (out / MARKER).unlink()  # as an earlier version of the tool wrote it
    assert cosim("run", wl, "--out", out).returncode == 0


def test_variants_of_one_workload_get_distinct_default_directories(tmp_path):
    wl = tiny_file(tmp_path)
    r1 = cosim("run", wl, cwd=tmp_path)
    r2 = cosim("run", wl, "--set", "policy.target_replay_ratio=0.3", cwd=tmp_path)
    r3 = cosim("run", wl, "--set", "scheduler.drs=false", "--seed", "3", cwd=tmp_path)
    assert r1.returncode == r2.returncode == r3.returncode == 0, r1.stderr + r2.stderr + r3.stderr
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == [
        "tiny",
        "tiny--policy.target_replay_ratio=0.3",
        "tiny--scheduler.drs=false--seed=3",
    ]
    assert "replaced" not in r1.stdout + r2.stdout + r3.stdout


def test_long_override_lists_keep_a_legal_distinct_name():
    from cosim.cli import variant_name

    a = variant_name("w", [f"hardware.memory.hbm.bandwidth_GBps={i}" for i in range(40)])
    b = variant_name("w", [f"hardware.memory.hbm.bandwidth_GBps={i}" for i in range(41)])
    assert a != b and len(a) < 100 and "/" not in a


@pytest.mark.parametrize(
    "out, words",
    [
        ("afile/run", ["afile is not a directory"]),
        ("/proc/fastcar-run", ["cannot"]),
        ("x" * 240, ["bytes long"]),
        ("link", ["symbolic link"]),
        ("afile", ["not a directory"]),
    ],
)
def test_unusable_locations_are_refused_before_the_work(tmp_path, out, words):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    # A trace file that does not exist: if the output were checked after loading the trace, the error
    # would name the trace instead.
    wl = tiny_file(tmp_path, trace={"source": "file", "path": "missing.parquet"})
    before = tree(tmp_path)
    r = cosim("run", wl, "--out", out, cwd=tmp_path)
    assert_refused(r, *words)
    assert tree(tmp_path) == before


def test_a_locked_directory_is_refused(tmp_path):
    out = tmp_path / "out"
    with claim(out, "run"):
        assert_refused(cosim("run", tiny_file(tmp_path), "--out", out), "another cosim process")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # lock and staging gone


def test_parents_created_for_a_failed_run_are_removed(tmp_path):
    wl = tiny_file(tmp_path, trace={"source": "file", "path": "missing.parquet"})
    r = cosim("run", wl, "--out", tmp_path / "a" / "b" / "run")
    assert r.returncode == 2 and "missing.parquet" in r.stderr
    assert not (tmp_path / "a").exists()


def test_stale_staging_of_a_dead_writer_is_cleaned_and_user_lookalikes_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.{dead.pid}.abc123.tmp"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"tool": outdir.TOOL, "kind": "run"}))
    lookalike = tmp_path / f".out.{dead.pid}.zzz.tmp"  # the user's, no marker
    lookalike.mkdir()
    (lookalike / "data").write_text("x")
    assert cosim("run", tiny_file(tmp_path), "--out", tmp_path / "out").returncode == 0
    assert not stale.exists() and (lookalike / "data").read_text() == "x"


def _kill_during_fill(out: Path, tmp_path: Path) -> None:
    """A writer that is SIGKILLed while it fills its staging directory."""
    script = (
        "import sys, time; from pathlib import Path; from cosim.outdir import claim\n"
        f"with claim({str(out)!r}, 'run') as t:\n"
        "    def fill(d):\n"
        "        (d / 'summary.json').write_text('{\"partial\": true}')\n"
        "        print('filling', flush=True); time.sleep(60)\n"
        "    t.commit(fill)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "filling"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_while_writing_keeps_the_old_run_whole(tmp_path):
    wl, out = tiny_file(tmp_path), tmp_path / "out"
    assert cosim("run", wl, "--out", out).returncode == 0
    before = tree(out)
    _kill_during_fill(out, tmp_path)
    assert tree(out) == before  # the old run, whole
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the dead writer's staging
    assert cosim("run", wl, "--out", out).returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_an_output_set_aside_by_a_crash_is_restored(tmp_path, monkeypatch):
    """Where the file system has no atomic exchange, the old output is set aside for an instant; a crash
    then leaves it under a name the next writer restores."""
    out = tmp_path / "out"
    with claim(out, "run") as t:
        t.commit(lambda d: (d / "summary.json").write_text('{"v": 1}'))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.replace(out, tmp_path / f".out.{dead.pid}.aside.old")  # the state after the crash
    with claim(out, "run") as t:
        assert (out / "summary.json").read_text() == '{"v": 1}'  # restored before anything else
        t.commit(lambda d: (d / "summary.json").write_text('{"v": 2}'))
    assert (out / "summary.json").read_text() == '{"v": 2}'


def test_replace_without_atomic_exchange(tmp_path, monkeypatch):
    def no_renameat2(src, dst, flags):
        raise OSError(38, "renameat2 not available")

    monkeypatch.setattr(outdir, "_renameat2", no_renameat2)
    out = tmp_path / "out"
    for v in (1, 2):
        with claim(out, "run") as t:
            t.commit(lambda d, v=v: (d / "summary.json").write_text(str(v)))
        assert (out / "summary.json").read_text() == str(v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failing_fill_leaves_nothing(tmp_path):
    out = tmp_path / "deep" / "out"
    with pytest.raises(RuntimeError), claim(out, "run") as t:
        t.commit(lambda d: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not (tmp_path / "deep").exists()


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cosim", "run", str(PAPER), "--out", str(out), "--quiet",
         "--set", "video.frames=32", "--set", "hardware.placement.kv_cache=ddr4"],  # 10 GiB KV: not in HBM
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it was claimed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no staging, no lock, no half-written run


def test_atomic_write_text_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    outdir.atomic_write_text(path, "old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        outdir.atomic_write_text(path, "new" * 1000)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_claim_refuses_what_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "verilog").mkdir()
    (out / "verilog" / "mine.sv").write_text("module m; endmodule")
    with pytest.raises(OutputError, match="verilog/mine.sv"):
        claim(out, "rtl-export").__enter__()
    assert (out / "verilog" / "mine.sv").is_file()


def test_a_report_temporary_left_by_a_killed_report_does_not_make_a_run_foreign(tmp_path):
    wl, out = tiny_file(tmp_path), tmp_path / "out"
    assert cosim("run", wl, "--out", out).returncode == 0
    (out / ".report.html.k3j2.tmp").write_text("<html>half")  # `report` SIGKILLed mid-write
    assert cosim("run", wl, "--out", out).returncode == 0
    assert not (out / ".report.html.k3j2.tmp").exists()
