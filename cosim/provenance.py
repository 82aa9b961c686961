"""What produced an output directory: tool version, git commit, command line, Python, libraries, machine.

Kept in its own file (``provenance.json``), not in ``summary.json``: it holds a timestamp and the machine,
and a run's results must stay byte-identical for the same inputs and seed.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: The distribution name of this tool, and the libraries whose versions decide its numbers.
DISTRIBUTION = "fastcar-cosim"
LIBRARIES = (
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "simpy",
    "scipy",
    "torch",
    "safetensors",
    "myhdl",
    "plotly",
    "optuna",
)
#: The source tree: a git checkout when the tool runs from one (an editable install).
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def tool_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def git_state() -> tuple[str | None, bool | None]:
    """The commit the tool's source is at and whether tracked files differ from it; (None, None) when the
    tool does not run from a git checkout or git is unavailable."""
    if not (SOURCE_ROOT / ".git").exists():
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again: ``python -m cosim ...`` for this tool's CLI."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("__main__.py", "cosim") and "cosim" in Path(argv[0]).parts[-2:]:
        return shlex.join(["python", "-m", "cosim", *argv[1:]])
    return shlex.join(argv)


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    commit, dirty = git_state()
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            libraries[name] = None
    return {
        "tool": DISTRIBUTION,
        "version": tool_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": command_line(argv),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "libraries": libraries,
        "machine": {
            "platform": platform.platform(),
            "architecture": platform.machine(),
            "cpus": os.cpu_count(),
            "memory_GiB": _memory_gib(),
        },
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def version_line() -> str:
    """What ``python -m cosim --version`` prints."""
    commit, dirty = git_state()
    where = f", git {commit[:12]}{' with local changes' if dirty else ''}" if commit else ""
    return f"{DISTRIBUTION} {tool_version()}{where} (Python {platform.python_version()})"
