"""External HDL tools: where they are, and a cache directory for everything built at run time.

Nothing here is written into the repository: the MyHDL VPI module, converted HDL for co-simulation and
Yosys runs go to a per-user cache directory (``FASTCAR_RTL_CACHE`` or ``<tmp>/fastcar-rtl``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

TOOLS = ("iverilog", "iverilog-vpi", "vvp", "verilator", "yosys", "ghdl")


def which(tool: str) -> str | None:
    return shutil.which(tool)


def missing(*tools: str) -> list[str]:
    """The tools of ``tools`` not on PATH (empty when all are there)."""
    return [t for t in tools if which(t) is None]


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("FASTCAR_RTL_CACHE", Path(tempfile.gettempdir()) / "fastcar-rtl"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a tool; raise ``RuntimeError`` with its output on failure."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
