"""Output locations the tool owns: it replaces only what it recognisably wrote itself.

Every directory a command writes (a run, a capture, an RTL export) carries a marker file naming its kind,
and holds only the files that kind writes. A command may replace an existing directory only when it is
empty or is such a directory with nothing foreign in it; anything else is refused (exit 2) before any work
starts, unless the user passes ``--force``. The working directory, its ancestors, the project and the home
directory are never replaced, ``--force`` or not.

Writing goes through :func:`claim`, which checks the location, takes a lock and creates a staging
directory beside the target *before* the work, so an unusable location is reported at once. The finished
staging directory is swapped into place with one atomic ``renameat2(RENAME_EXCHANGE)``: at every instant
the old output or the new one is there, whole. Staging directories of a writer that died (SIGKILL, power
loss) are removed by the next writer of the same name.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cosim.errors import InputError

MARKER = ".fastcar-output.json"
TOOL = "fastcar-cosim"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: What each kind of output directory may hold (glob patterns relative to it), besides the marker.
#: The first pattern is the file that identifies a directory written before markers existed.
KINDS: dict[str, tuple[str, ...]] = {
    "run": (
        "summary.json",
        "config.resolved.yaml",
        "layers.csv",
        "trace.parquet",
        "timeline.json",
        "report.html",
        "provenance.json",
        "cores.csv",
        "frames.png",
        ".report.html.*.tmp",  # what a killed `report` leaves (atomic_write_text's temporary)
        "report_data/*.csv",
        "report_data/.*.tmp",
    ),
    "capture": ("quality.json", "trace.parquet", "provenance.json"),
    "sweep": (
        "results.sqlite",
        "results.sqlite-journal",
        "sweep.yaml",
        "results.csv",
        "results.parquet",
        "results.parquet.tmp",
        "results.sqlite-wal",
        "results.sqlite-shm",
        "pareto.csv",
        "confirmed.csv",
        "report.html",
        "report_data/*.csv",
        "plotly.min.js",  # shared by report.html and the front runs' reports
        ".*.tmp",
        # --write-front: a run directory per Pareto point (the files of a run, above)
        "runs/*/.fastcar-output.json",
        "runs/*/summary.json",
        "runs/*/config.resolved.yaml",
        "runs/*/layers.csv",
        "runs/*/trace.parquet",
        "runs/*/provenance.json",
        "runs/*/timeline.json",
        "runs/*/report.html",
        "runs/*/cores.csv",
        "runs/*/frames.png",
        "runs/*/report_data/*.csv",
        "runs/*/report_data/.*.tmp",
        "runs/.*",  # the lock file and staging directory of a run being written
        "runs/.*/*",
    ),
    "calibration": (
        "fit.json",
        "calibration.yaml",
        "residuals.csv",
        "leave_one_out.csv",
        "profiles.csv",
        "evaluations.csv",
        "near_equivalent.csv",
        "preset.yaml",
        "report.html",  # python -m cosim report DIR
        "report_data/*.csv",
        ".report.html.*.tmp",  # what a killed `report` leaves (atomic_write_text's temporaries)
        "report_data/.*.tmp",
    ),
    "rtl-export": ("manifest.json", "resources.csv", "verilog/*.v", "vhdl/*.vhd", "vcd/*.vcd"),
    "compare": ("compare.json", "report.html", "report_data/*.csv", "provenance.json"),
}

#: The project's own folders: never an output location, even with --force.
_PROJECT_SOURCES = {
    "cosim",
    "accelerator",
    "models",
    "reports",
    "docs",
    "tests",
    "workloads",
    "benchmarks",
    ".ci",
    ".git",
}

#: Leave room for the staging and lock names built from the directory's name.
_NAME_SLACK = 32


class OutputError(InputError):
    """An output location the tool will not (or cannot) write."""


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Write a file so that a reader (or a crash, or a full disk) sees the old file or the new one whole."""
    atomic_write_texts({Path(path): text}, mode)


def atomic_write_texts(files: dict[Path, str], mode: int = 0o644) -> None:
    """Write several files (a page and the data behind it) so that a failure while writing any of them
    (a full disk) changes none: each is written whole beside its old file first, then all replace theirs."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------
# What the tool wrote
# ---------------------------------------------------------------------------------------------------


def marker_kind(directory: Path) -> str | None:
    """The kind named by the directory's marker, or None (no marker, or not one of ours)."""
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("tool") == TOOL and data.get("kind") in KINDS:
        return data["kind"]
    return None


def foreign_entries(directory: Path, kind: str) -> list[str]:
    """Entries of ``directory`` that an output of ``kind`` does not write (symlinks always count)."""
    patterns = KINDS[kind]
    # the folders a pattern passes through: "runs/*/summary.json" allows "runs" and "runs/<anything>"
    subdirs = {"/".join(p.split("/")[:i]) for p in patterns for i in range(1, p.count("/") + 1)}
    foreign = []
    for root, dirs, files in os.walk(directory):
        rel_root = Path(root).relative_to(directory)
        for d in list(dirs):
            rel = (rel_root / d).as_posix()
            if os.path.islink(os.path.join(root, d)) or not any(fnmatch.fnmatchcase(rel, s) for s in subdirs):
                foreign.append(rel + "/")
                dirs.remove(d)
        for f in files:
            rel = (rel_root / f).as_posix()
            known = rel == MARKER or any(fnmatch.fnmatchcase(rel, p) for p in patterns)
            if os.path.islink(os.path.join(root, f)) or not known:
                foreign.append(rel)
    return sorted(foreign)


def owned_by_tool(directory: Path, kind: str) -> bool:
    """True when ``directory`` is an output of ``kind`` holding nothing else: its marker says so, or (an
    output written before markers existed) it holds the kind's identifying file and only the kind's files."""
    if foreign_entries(directory, kind):
        return False
    return marker_kind(directory) == kind or (
        marker_kind(directory) is None and (directory / KINDS[kind][0]).is_file()
    )


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be replaced, or None."""
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        return "is the working directory or one of its parents"
    if real == PROJECT_ROOT or real in PROJECT_ROOT.parents:
        return "is the project directory or one of its parents"
    if real == Path.home().resolve():
        return "is the home directory"
    if real.parent == PROJECT_ROOT and real.name in _PROJECT_SOURCES:
        return "is part of the project's sources"
    if (real / ".git").exists():
        return "is a git repository"
    return None


# ---------------------------------------------------------------------------------------------------
# Claiming a location, writing it
# ---------------------------------------------------------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """Linux renameat2; raises OSError (ENOSYS/EINVAL where the libc or file system lacks it)."""
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(dst))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class OutputDir:
    """A claimed output location: locked, checked, with a staging directory beside it. Use as a context
    manager; :meth:`commit` moves the staging directory into place."""

    path: Path
    kind: str
    force: bool = False
    replaced: str | None = None  #: what was at ``path`` before the commit ("an earlier run", ...)
    staging: Path | None = None
    _lock_fd: int | None = None
    _lock_path: Path | None = None
    _made_parents: list[Path] = field(default_factory=list)
    shown: str = ""  #: the location as the user spelled it, for messages

    # -- claim -------------------------------------------------------------------------------------
    def _check_location(self) -> None:
        out = self.path
        if out.name in ("", ".", ".."):
            raise OutputError(f"{self.shown}: not a usable output directory name")
        limit = os.pathconf("/", "PC_NAME_MAX") - _NAME_SLACK
        if len(os.fsencode(out.name)) > limit:
            raise OutputError(
                f"{self.shown}: directory name is {len(os.fsencode(out.name))} bytes long; at most {limit}"
            )
        why = _protected(out)
        if why:
            raise OutputError(f"{self.shown}: refusing to write there: it {why}")
        for parent in [out.parent, *out.parent.parents]:
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    raise OutputError(f"{self.shown}: cannot write there: {parent} is not a directory")
                break

    def _check_existing(self) -> None:
        out = self.path
        if out.is_symlink():
            raise OutputError(f"{self.shown}: is a symbolic link; give the directory it points to")
        if not out.exists():
            return
        if not out.is_dir():
            raise OutputError(f"{self.shown}: exists and is not a directory")
        if not any(out.iterdir()):
            self.replaced = "an empty directory"
            return
        foreign = foreign_entries(out, self.kind)
        if not foreign and owned_by_tool(out, self.kind):
            self.replaced = f"an earlier {self.kind} output"
            return
        if self.force:
            self.replaced = "a directory this tool did not write (--force)"
            return
        other = marker_kind(out)
        if other and other != self.kind:
            why = f"it is a {other} output, not a {self.kind} output"
        elif foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            why = f"it holds {foreign[0]}{more}, which this tool did not write"
        else:
            why = "it was not written by this tool"
        raise OutputError(
            f"{self.shown}: refusing to replace this directory: {why}; choose another output directory "
            "or pass --force to replace it"
        )

    def _make_parents(self) -> None:
        missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise OutputError(f"{self.shown}: cannot create {p}: {exc.strerror}") from None
            self._made_parents.append(p)

    def _lock(self) -> None:
        """An exclusive lock on a file beside the target; unlinked by its holder (inode checked, so a
        holder never locks a file another holder has already removed)."""
        lock_path = self.path.parent / f".{self.path.name}.lock"
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{self.shown}: cannot write there: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(
                    f"{self.shown}: another cosim process is writing this directory; wait for it to "
                    "finish or choose another output directory"
                ) from None
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd, self._lock_path = fd, lock_path
                return
            os.close(fd)

    def _clean_stale(self) -> None:
        """Remove staging directories that a dead writer of this name left behind; restore an output that
        a crash left set aside (only possible where the file system lacks an atomic exchange)."""
        prefix = f".{self.path.name}."
        for entry in self.path.parent.iterdir():
            name = entry.name
            if not name.startswith(prefix) or not entry.is_dir() or entry.is_symlink():
                continue
            parts = name[len(prefix) :].split(".")
            if len(parts) != 3 or parts[2] not in ("tmp", "old") or not parts[0].isdigit():
                continue
            if pid_alive(int(parts[0])) and int(parts[0]) != os.getpid():
                continue
            if marker_kind(entry) is None:
                continue
            if parts[2] == "old" and not self.path.exists():
                os.replace(entry, self.path)
                continue
            shutil.rmtree(entry, ignore_errors=True)

    def __enter__(self) -> OutputDir:
        if self.kind not in KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}")
        self.shown = self.shown or str(self.path)
        self.path = Path(os.path.abspath(self.path))
        self._check_location()
        self._make_parents()
        try:
            self._lock()
            self._clean_stale()
            self._check_existing()
            try:
                self.staging = Path(
                    tempfile.mkdtemp(
                        prefix=f".{self.path.name}.{os.getpid()}.", suffix=".tmp", dir=self.path.parent
                    )
                )
            except OSError as exc:
                raise OutputError(f"{self.shown}: cannot write there: {exc.strerror}") from None
            (self.staging / MARKER).write_text(json.dumps({"tool": TOOL, "kind": self.kind}) + "\n")
        except BaseException:
            self._release(keep_parents=False)
            raise
        return self

    # -- commit ------------------------------------------------------------------------------------
    def commit(self, fill: Callable[[Path], None]) -> None:
        """Fill the staging directory and swap it into place; the replaced output is removed."""
        assert self.staging is not None, "commit() outside the claim"
        fill(self.staging)
        self.staging.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared
        self._check_existing()  # the directory may have changed while the work ran
        if not self.path.exists():
            try:
                _renameat2(self.staging, self.path, _RENAME_NOREPLACE)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EINVAL):
                    raise
                os.rename(self.staging, self.path)
            self.staging = None
            return
        try:
            _renameat2(self.staging, self.path, _RENAME_EXCHANGE)
            old = self.staging
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL):
                raise
            # No atomic exchange here: set the old output aside under a name _clean_stale restores.
            old = self.path.parent / f".{self.path.name}.{os.getpid()}.aside.old"
            os.replace(self.path, old)
            os.replace(self.staging, self.path)
        self.staging = None
        if not self.force and foreign_entries(old, self.kind):
            # Something foreign appeared in the last instant: keep it where the user will see it.
            keep = self.path.parent / f"{self.path.name}.replaced-{os.getpid()}"
            os.replace(old, keep)
            self.replaced = f"{self.replaced}; files added meanwhile were kept in {keep}"
            return
        shutil.rmtree(old, ignore_errors=True)

    def _release(self, keep_parents: bool) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None
        if not keep_parents:
            for p in reversed(self._made_parents):
                try:
                    p.rmdir()
                except OSError:
                    break
        self._made_parents = []

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release(keep_parents=exc_type is None)


def claim(path: str | os.PathLike, kind: str, force: bool = False) -> OutputDir:
    """``with claim(out, "run") as target: ...work...; target.commit(fill)``"""
    return OutputDir(Path(path), kind, force)
