"""External HDL tools: where they are, and the private cache directory for everything built at run time.

Nothing here is written into the repository: the MyHDL VPI module, co-simulation builds, scratch
directories of HDL conversion and Yosys results go to a per-user cache directory:
``$FASTCAR_RTL_CACHE`` if set, else ``$XDG_CACHE_HOME/fastcar/rtl``, else ``~/.cache/fastcar/rtl``.

The cache holds native code that ``vvp`` loads (``myhdl.vpi``) and compiled simulations, so whoever can
write into it can run code in a user's ``rtl check``. It is therefore created with mode 0700, and a cache
root that is a symlink, is not owned by the current user, or can be written by group or others is refused
(:class:`CacheError`, bad input), as is one below a directory that other users could rename it out of.
Every cached build is named by :func:`build_key`, a hash of everything it depends on, so an edit of any
``accelerator/**/*.py``, another myhdl or another tool version never picks up a stale build.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

from cosim.errors import InputError

TOOLS = ("iverilog", "iverilog-vpi", "vvp", "verilator", "yosys", "ghdl")
#: The package whose sources every cached build depends on (the RTL twins import the cost model, spec...).
ACCELERATOR_DIR = Path(__file__).resolve().parent.parent
#: How each tool prints its version (the first line is enough to tell builds apart).
VERSION_FLAGS = {
    "iverilog": "-V",
    "vvp": "-V",
    "yosys": "-V",
    "ghdl": "--version",
    "verilator": "--version",
}
CACHE_ENV = "FASTCAR_RTL_CACHE"


class CacheError(InputError):
    """An RTL build cache location that is unsafe or unusable: names the path and the reason."""


def which(tool: str) -> str | None:
    return shutil.which(tool)


def missing(*tools: str) -> list[str]:
    """The tools of ``tools`` not on PATH (empty when all are there)."""
    return [t for t in tools if which(t) is None]


# ---------------------------------------------------------------------------------------------------
# The cache location
# ---------------------------------------------------------------------------------------------------


def default_cache_root() -> Path:
    """``$FASTCAR_RTL_CACHE``, else ``$XDG_CACHE_HOME/fastcar/rtl``, else ``~/.cache/fastcar/rtl``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(os.path.abspath(os.path.expanduser(env)))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative = unset
    return base / "fastcar" / "rtl"


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _check_private_dir(path: Path, what: str = "RTL build cache") -> None:
    """``path`` is a real directory of the current user that group and others cannot write."""
    try:
        st = path.lstat()
    except OSError as exc:
        raise CacheError(f"{path}: {what} cannot be inspected ({exc.strerror or exc})") from None
    hint = f"; set {CACHE_ENV} to a directory of your own"
    if stat.S_ISLNK(st.st_mode):
        raise CacheError(f"{path}: {what} is a symlink, refused (it could point anywhere){hint}")
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"{path}: {what} is not a directory")
    if st.st_uid != os.geteuid():
        raise CacheError(f"{path}: {what} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}){hint}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"{path}: {what} is writable by group/others (mode {_mode(st)}); "
            f"run chmod go-w on it or set {CACHE_ENV}"
        )


def check_private_file(path: Path) -> Path:
    """A cached build about to be loaded or run: a regular file (not a symlink) of the current user that
    group and others cannot write. Inside a checked cache this always holds; it is checked again because
    ``vvp`` loads the VPI module as native code."""
    try:
        st = path.lstat()
    except OSError as exc:
        raise CacheError(f"{path}: cached build cannot be inspected ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CacheError(f"{path}: cached build is not a regular file (a symlink or special file), refused")
    if st.st_uid != os.geteuid():
        raise CacheError(f"{path}: cached build is owned by uid {st.st_uid}, not by you, refused")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(f"{path}: cached build is writable by group/others (mode {_mode(st)}), refused")
    return path


def _check_ancestors(path: Path) -> None:
    """No directory above the cache lets another user swap it for their own: each one, as written and as
    symlinks resolve, is owned by root or the current user, and group/other-writable only with the
    sticky bit (as ``/tmp`` is). Parents that do not exist yet are created private by us."""
    me = os.geteuid()
    written = list(path.parents)
    resolved = list(Path(os.path.realpath(path.parent)).joinpath("x").parents)
    for parent, follow in [(p, False) for p in written] + [(p, True) for p in resolved]:
        try:
            st = parent.stat() if follow else parent.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CacheError(
                f"{path}: cannot inspect {parent}, a parent of the RTL build cache ({exc.strerror})"
            ) from None
        if st.st_uid not in (0, me):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a directory"
            raise CacheError(
                f"{path}: RTL build cache lies below {parent}, {kind} owned by uid {st.st_uid}; "
                f"set {CACHE_ENV} to a directory of your own"
            )
        if stat.S_ISLNK(st.st_mode):
            continue  # a symlink's own mode means nothing; its target is checked as resolved
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise CacheError(
                f"{path}: RTL build cache lies below {parent}, writable by group/others without the "
                f"sticky bit (mode {_mode(st)}); set {CACHE_ENV} to a directory of your own"
            )


def _make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (whatever the umask)."""
    missing_parts = []
    p = path
    while not os.path.lexists(p):
        missing_parts.append(p)
        if p.parent == p:
            break
        p = p.parent
    for part in reversed(missing_parts):
        try:
            part.mkdir(mode=0o700)
        except FileExistsError:  # another process of ours made it meanwhile; it is checked below
            continue
        except OSError as exc:
            raise CacheError(f"{part}: cannot create the RTL build cache ({exc.strerror or exc})") from None
        os.chmod(part, 0o700)


def cache_root() -> Path:
    """The checked cache root (created with mode 0700 if it does not exist)."""
    root = default_cache_root()
    if not os.path.lexists(root):
        _check_ancestors(root)
        _make_private_dirs(root)
    _check_private_dir(root)
    _check_ancestors(root)
    return root


def cache_dir(*parts: str) -> Path:
    """A directory inside the checked cache root, created with mode 0700."""
    path = cache_root()
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part:
            raise ValueError(f"bad cache directory name {part!r}")
        path = path / part
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            _check_private_dir(path, "RTL build cache directory")
        except OSError as exc:
            raise CacheError(f"{path}: cannot create ({exc.strerror or exc})") from None
    return path


# ---------------------------------------------------------------------------------------------------
# What a cached build depends on
# ---------------------------------------------------------------------------------------------------


def accelerator_sources() -> list[Path]:
    """Every Python source of the ``accelerator`` package: the RTL twins, and the cost model, spec and
    components they import (an edit of ``accelerator/cost.py`` must not leave a stale build)."""
    return sorted(p for p in ACCELERATOR_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def files_digest(files: Iterable[Path], base: Path | None = None) -> str:
    """SHA-256 over the files' names (relative to ``base``, else the bare name) and contents."""
    h = hashlib.sha256()
    for f in files:
        data = f.read_bytes()
        name = f.relative_to(base).as_posix() if base is not None else f.name
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def sources_digest() -> str:
    """Digest of :func:`accelerator_sources`: a key part of every cached build."""
    return files_digest(accelerator_sources(), ACCELERATOR_DIR)


@functools.cache
def tool_version(tool: str) -> str:
    """The tool's version output (first non-empty line), ``""`` when it is not installed."""
    exe = which(tool)
    if exe is None:
        return ""
    flag = VERSION_FLAGS.get(tool, "--version")
    try:
        proc = subprocess.run(
            [exe, flag], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{exe}: no version ({exc})"
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return f"{exe}: {lines[0] if lines else f'exit {proc.returncode}'}"


def build_key(*parts: str) -> str:
    """A short hash naming a cached build by everything it depends on."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a tool; raise ``RuntimeError`` with its output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
