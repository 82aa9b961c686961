"""Yosys resource estimates: ``synth_xilinx -family xcup`` (UltraScale+) of a converted module.

These are pre-place-and-route numbers from generic synthesis, without I/O buffers (``-noiopad``) since the
modules are blocks inside a design, not top levels. They are the basis of the resource table that
``accelerator.rtl.resources`` uses. Results are cached under :func:`result_key`: a hash of the converted
Verilog text (which captures every source and the myhdl version that produced it), the Yosys version, the
synthesis script and this file (which turns cell counts into resources).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

from accelerator.rtl.convert import convert
from accelerator.rtl.harness import Bench
from accelerator.rtl.tools import build_key, cache_dir, files_digest, missing, run, tool_version

SCRIPT = (
    "read_verilog {src}; synth_xilinx -family xcup -noiopad -noclkbuf -top {top}; tee -q -o {out} stat -json"
)

FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
LUTRAM_PREFIXES = ("RAM16", "RAM32", "RAM64", "RAM128", "RAM256", "RAM512")
SRL_CELLS = ("SRL16E", "SRLC16E", "SRLC32E")


def yosys_version() -> str:
    if missing("yosys"):
        return ""
    return run(["yosys", "-V"]).stdout.strip()


def summarize(cells: dict[str, int]) -> dict[str, float]:
    """Cell counts by type to the board resources: LUTs (logic + LUTRAM + SRL), FFs, DSPs, BRAM36."""
    luts = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6]", c))
    lutram = sum(n for c, n in cells.items() if c.startswith(LUTRAM_PREFIXES))
    srl = sum(n for c, n in cells.items() if c in SRL_CELLS)
    return {
        "luts": luts + lutram + srl,
        "lutram": lutram + srl,
        "ffs": sum(n for c, n in cells.items() if c in FF_CELLS),
        "dsps": cells.get("DSP48E2", 0),
        "brams": cells.get("RAMB36E2", 0) + 0.5 * cells.get("RAMB18E2", 0),
        "urams": cells.get("URAM288", 0),
        "carry": sum(n for c, n in cells.items() if c.startswith("CARRY")),
    }


def result_key(verilog: str) -> str:
    """Names a cached synthesis result by everything it depends on."""
    body = [ln for ln in verilog.splitlines() if not ln.startswith(("// File:", "// Date:"))]
    return build_key(
        "yosys",
        hashlib.sha256("\n".join(body).encode()).hexdigest(),
        tool_version("yosys"),
        SCRIPT,
        files_digest([Path(__file__)]),
    )


def synthesize(bench: Bench) -> dict:
    """Synthesize ``bench``'s module for its parameters; returns the resource summary and cell counts."""
    if missing("yosys"):
        raise RuntimeError("yosys is not installed")
    with tempfile.TemporaryDirectory(dir=cache_dir("yosys")) as tmp:
        work = Path(tmp)
        src = convert(bench, "Verilog", work)[0]
        cached = cache_dir("yosys", "results") / f"{bench.name}_{result_key(src.read_text())}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        out = work / "stat.json"
        t0 = time.perf_counter()
        script = SCRIPT.format(src=src.name, top=bench.name, out=out.name)
        run(["yosys", "-q", "-p", script], cwd=work, timeout=1800)
        cells = json.loads(out.read_text())["modules"]["\\" + bench.name]["num_cells_by_type"]
        result = {**summarize(cells), "cells": cells, "synth_s": round(time.perf_counter() - t0, 1)}
        (work / "result.json").write_text(json.dumps(result))
        os.replace(work / "result.json", cached)  # atomic: concurrent runs never read half a file
    return result
