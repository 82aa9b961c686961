"""The MyHDL co-simulation VPI for Icarus, built from the sources the myhdl package ships.

The myhdl wheel installs ``myhdl.c`` and ``myhdl_table.c`` under ``<prefix>/share/myhdl/cosimulation/
icarus``; ``iverilog-vpi`` compiles them into ``myhdl.vpi`` in well under a second. We build it into the
private cache directory (:func:`accelerator.rtl.tools.cache_dir`), never into the repository, under a key
that hashes its sources, the myhdl version and the Icarus version (:func:`vpi_key`): ``vvp`` loads this
native code, so a module built from other sources or for another Icarus is never picked up.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import myhdl

from accelerator.rtl.tools import (
    build_key,
    cache_dir,
    check_private_file,
    files_digest,
    missing,
    run,
    tool_version,
)

#: The built module (``iverilog-vpi --name=myhdl``).
VPI_NAME = "myhdl.vpi"


def vpi_sources() -> Path:
    for prefix in (sys.prefix, sys.base_prefix):
        src = Path(prefix) / "share" / "myhdl" / "cosimulation" / "icarus"
        if (src / "myhdl.c").exists():
            return src
    raise FileNotFoundError("myhdl co-simulation sources (share/myhdl/cosimulation/icarus) not found")


#: The C files of the VPI module (the directory also holds an older, unused variant).
VPI_C_FILES = ("myhdl.c", "myhdl_table.c")


def vpi_source_files(src: Path | None = None) -> list[Path]:
    """The C files the VPI module is compiled from."""
    src = vpi_sources() if src is None else src
    return [src / name for name in VPI_C_FILES]


def vpi_key(src: Path | None = None) -> str:
    """Hash of what ``myhdl.vpi`` depends on: its C sources, the myhdl version, the Icarus version (whose
    ``vpi_user.h`` and ``libvpi`` it is compiled and linked against)."""
    return build_key(
        "myhdl-vpi",
        files_digest(vpi_source_files(src)),
        myhdl.__version__,
        tool_version("iverilog"),
        tool_version("vvp"),
    )


def vpi_module() -> Path:
    """Path of ``myhdl.vpi``, building it if needed."""
    if missing("iverilog-vpi"):
        raise RuntimeError("iverilog-vpi is not installed (apt install iverilog)")
    src = vpi_sources()
    out = cache_dir("vpi", vpi_key(src))
    vpi = out / VPI_NAME
    if not vpi.is_file():
        with tempfile.TemporaryDirectory(dir=out) as tmp:  # build aside, move into place atomically
            work = Path(tmp)
            # iverilog-vpi is a shell script that does not quote its arguments: compile copies by bare
            # name in the build directory, so neither the myhdl prefix nor the cache path may break it
            for f in vpi_source_files(src):
                shutil.copy2(f, work / f.name)
            run(["iverilog-vpi", "--name=myhdl", *VPI_C_FILES], cwd=work)
            os.chmod(work / VPI_NAME, 0o700)
            os.replace(work / VPI_NAME, vpi)
    return check_private_file(vpi)
