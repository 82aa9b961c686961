"""The MyHDL co-simulation VPI for Icarus, built from the sources the myhdl package ships.

The myhdl wheel installs ``myhdl.c`` and ``myhdl_table.c`` under ``<prefix>/share/myhdl/cosimulation/
icarus``; ``iverilog-vpi`` compiles them into ``myhdl.vpi`` in well under a second. We build it once per
myhdl version into the cache directory, never into the repository.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import myhdl

from accelerator.rtl.tools import cache_dir, missing, run


def vpi_sources() -> Path:
    for prefix in (sys.prefix, sys.base_prefix):
        src = Path(prefix) / "share" / "myhdl" / "cosimulation" / "icarus"
        if (src / "myhdl.c").exists():
            return src
    raise FileNotFoundError("myhdl co-simulation sources (share/myhdl/cosimulation/icarus) not found")


def vpi_module() -> Path:
    """Path of ``myhdl.vpi``, building it if needed."""
    out = cache_dir("vpi", myhdl.__version__)
    vpi = out / "myhdl.vpi"
    if not vpi.exists():
        if missing("iverilog-vpi"):
            raise RuntimeError("iverilog-vpi is not installed (apt install iverilog)")
        src = vpi_sources()
        with tempfile.TemporaryDirectory(dir=out) as tmp:  # build aside, move into place atomically
            run(["iverilog-vpi", str(src / "myhdl.c"), str(src / "myhdl_table.c")], cwd=Path(tmp))
            os.replace(Path(tmp) / "myhdl.vpi", vpi)
    return vpi
