"""The RTL build cache: per user, private, refused when others could write it, and every cached build
named by a hash of everything it depends on (so neither an attacker nor a stale build gets loaded)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from accelerator.rtl import cosim as rtl_cosim
from accelerator.rtl import harness, yosys
from accelerator.rtl import tools as rtl_tools
from accelerator.rtl.drs import DrsBench, DrsParams, drs_case
from accelerator.rtl.tools import CacheError, cache_dir, cache_root
from cosim.errors import InputError

OTHER_UID = 1001
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a directory to another user")


@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    """``FASTCAR_RTL_CACHE`` pointing into tmp_path (a private directory); returns a setter."""

    def point(path: Path) -> Path:
        monkeypatch.setenv("FASTCAR_RTL_CACHE", str(path))
        return path

    return point


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- where the cache is ---------------------------------------------------------------------------


def test_default_is_per_user_under_xdg_or_home(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCAR_RTL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "fastcar" / "rtl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")  # the XDG spec: relative paths are invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o755)
    root = cache_root()
    assert root == tmp_path / "home" / ".cache" / "fastcar" / "rtl"
    # created private, including the parents it had to create, whatever the umask
    for p in (root, root.parent, root.parent.parent):
        assert mode(p) == 0o700, p
    assert mode(tmp_path / "home") == 0o755  # an existing parent is left alone
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == root


def test_env_overrides_and_subdirs_are_private(cache_env, tmp_path):
    old = os.umask(0o002)  # a umask that would make new directories group-writable
    try:
        root = cache_env(tmp_path / "mine")
        d = cache_dir("vpi", "abc")
    finally:
        os.umask(old)
    assert d == root / "vpi" / "abc"
    assert mode(root) == 0o700 and not mode(d) & 0o077 and not mode(root / "vpi") & 0o077


# -- refused cache roots ----------------------------------------------------------------------------


@as_root
def test_foreign_owned_root_is_refused(cache_env, tmp_path):
    root = cache_env(tmp_path / "planted")
    root.mkdir(mode=0o700)
    os.chown(root, OTHER_UID, OTHER_UID)
    with pytest.raises(CacheError, match=f"^{root}: RTL build cache is owned by uid {OTHER_UID}"):
        cache_dir("vpi")
    assert not (root / "vpi").exists()


@pytest.mark.parametrize("perm", [0o770, 0o775, 0o707, 0o777])
def test_group_or_other_writable_root_is_refused(cache_env, tmp_path, perm):
    root = cache_env(tmp_path / "shared")
    root.mkdir()
    os.chmod(root, perm)
    with pytest.raises(CacheError, match=rf"writable by group/others \(mode 0{perm:o}\)"):
        cache_root()


def test_symlinked_root_is_refused(cache_env, tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    root = cache_env(tmp_path / "link")
    root.symlink_to(tmp_path / "real")
    with pytest.raises(CacheError, match="is a symlink"):
        cache_root()


def test_root_that_is_a_file_is_refused(cache_env, tmp_path):
    root = cache_env(tmp_path / "file")
    root.write_text("")
    with pytest.raises(CacheError, match="not a directory"):
        cache_root()


def test_root_below_a_directory_others_can_write_is_refused(cache_env, tmp_path):
    """Whoever can write the parent can rename our cache away and put theirs in its place..."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    cache_env(shared / "cache")
    with pytest.raises(CacheError, match="lies below .*shared, writable by group/others without the sticky"):
        cache_root()
    assert not (shared / "cache").exists()
    os.chmod(shared, 0o1777)  # ...unless the sticky bit stops them (as on /tmp)
    assert mode(cache_root()) == 0o700


@as_root
def test_root_below_a_foreign_directory_is_refused(cache_env, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    (theirs / "cache").mkdir(mode=0o700)
    cache_env(theirs / "cache")
    with pytest.raises(CacheError, match=f"owned by uid {OTHER_UID}"):
        cache_root()


def test_refusal_is_bad_input():
    assert issubclass(CacheError, InputError)


def test_a_planted_vpi_module_is_not_loaded(cache_env, tmp_path, tools):
    """A module that someone else could have written is refused rather than handed to vvp."""
    tools("iverilog-vpi")
    root = cache_env(tmp_path / "c")
    planted = cache_dir("vpi", rtl_cosim.vpi_key()) / rtl_cosim.VPI_NAME
    planted.write_bytes(b"\x7fELF not really")
    os.chmod(planted, 0o666)
    with pytest.raises(CacheError, match="cached build is writable by group/others"):
        rtl_cosim.vpi_module()
    assert root in planted.parents


def test_rtl_check_refuses_an_unsafe_cache_with_exit_2(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "rtl", "check"],
        capture_output=True,
        text=True,
        env={**os.environ, "FASTCAR_RTL_CACHE": str(root)},
        timeout=300,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {root}: ") and "writable by group/others" in lines[0]
    assert r.stdout == ""  # refused before any check ran


# -- keys -------------------------------------------------------------------------------------------


@pytest.fixture
def accelerator_copy(monkeypatch, tmp_path) -> Path:
    """A temporary copy of the accelerator package, hashed instead of the real one."""
    copy = tmp_path / "accelerator"
    shutil.copytree(rtl_tools.ACCELERATOR_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(rtl_tools, "ACCELERATOR_DIR", copy)
    return copy


def test_every_accelerator_source_is_hashed(accelerator_copy):
    names = {str(p.relative_to(accelerator_copy)) for p in rtl_tools.accelerator_sources()}
    assert {"cost.py", "spec.py", "rtl/harness.py", "rtl/drs.py", "drs.py"} <= names


@pytest.mark.parametrize("edited", ["cost.py", "spec.py", "rtl/drs.py", "rtl/common.py"])
def test_editing_a_source_changes_the_cosim_key(accelerator_copy, edited):
    bench = DrsBench(DrsParams(cores=3), [], 1)
    before = harness.cosim_key(bench)
    assert harness.cosim_key(bench) == before  # stable
    with (accelerator_copy / edited).open("a") as f:
        f.write("\n# an edit\n")
    assert harness.cosim_key(bench) != before


def test_cosim_key_follows_tool_and_myhdl_versions_and_parameters(monkeypatch):
    bench = DrsBench(DrsParams(cores=3), [], 1)
    before = harness.cosim_key(bench)
    assert harness.cosim_key(DrsBench(DrsParams(cores=4), [], 1)) != before
    real = rtl_tools.tool_version
    monkeypatch.setattr(harness, "tool_version", lambda t: real(t) + " (rebuilt)")
    assert harness.cosim_key(bench) != before
    monkeypatch.undo()
    monkeypatch.setattr(harness.myhdl, "__version__", "0.0.1")
    assert harness.cosim_key(bench) != before


def test_vpi_key_follows_its_sources_and_the_icarus_version(monkeypatch, tmp_path):
    src = tmp_path / "icarus"
    src.mkdir()
    for f in rtl_cosim.vpi_source_files():
        shutil.copy(f, src / f.name)
    before = rtl_cosim.vpi_key(src)
    assert before == rtl_cosim.vpi_key()  # same bytes, same key
    with (src / "myhdl.c").open("a") as f:
        f.write("\n/* patched */\n")
    assert rtl_cosim.vpi_key(src) != before
    real = rtl_tools.tool_version
    monkeypatch.setattr(rtl_cosim, "tool_version", lambda t: real(t) + " 99")
    assert rtl_cosim.vpi_key() != before
    # the cosim build depends on the VPI module too
    bench = DrsBench(DrsParams(cores=3), [], 1)
    monkeypatch.undo()
    k = harness.cosim_key(bench)
    monkeypatch.setattr(rtl_cosim, "vpi_key", lambda src=None: "another")
    assert harness.cosim_key(bench) != k


def test_yosys_result_key_follows_verilog_version_and_script(monkeypatch):
    v = "// File: a.v\n// Date: today\nmodule m; endmodule\n"
    k = yosys.result_key(v)
    assert yosys.result_key(v.replace("today", "tomorrow")) == k  # the date header is not the design
    assert yosys.result_key(v.replace("module m;", "module m ;")) != k
    real = rtl_tools.tool_version
    monkeypatch.setattr(yosys, "tool_version", lambda t: real(t) + " 0.99")
    assert yosys.result_key(v) != k
    monkeypatch.undo()
    monkeypatch.setattr(yosys, "SCRIPT", yosys.SCRIPT + "; opt")
    assert yosys.result_key(v) != k


# -- a cache path with a space ----------------------------------------------------------------------


def test_cosim_with_a_space_in_the_cache_path(cache_env, tmp_path, tools):
    """MyHDL split the vvp command string at spaces, and iverilog-vpi does not quote its arguments: both
    broke a cache path with a space. One small module, built from scratch in such a cache."""
    tools("iverilog", "iverilog-vpi", "vvp")
    root = cache_env(tmp_path / "my rtl cache")
    bench = drs_case(np.random.default_rng(7))
    a = harness.simulate(bench, "myhdl")
    b = harness.simulate(bench.fresh(), "icarus")
    assert a.latencies == b.latencies and a.outputs == b.outputs == bench.reference()
    assert (root / "vpi" / rtl_cosim.vpi_key() / "myhdl.vpi").is_file()
    assert (root / "cosim" / f"{bench.name}_{harness.cosim_key(bench)}.vvp").is_file()
