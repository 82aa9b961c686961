"""Convert a bench's module to Verilog and VHDL, and run the tool checks on the result.

* Verilog: ``iverilog`` compiles it and ``verilator --lint-only -Wall`` lints it with no blanket waiver:
  the few warnings MyHDL's code generation leaves (implicit sign extensions, bits a slice leaves unused)
  are waived one message at a time, at their exact widths, by a generated Verilator configuration file
  (:mod:`accelerator.rtl.waivers`); any other warning fails.
* VHDL: ``ghdl -a`` analyses it together with MyHDL's support package and ``ghdl -e`` elaborates it.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from myhdl import Signal

from accelerator.rtl.harness import Bench
from accelerator.rtl.tools import cache_dir, missing, run
from accelerator.rtl.waivers import Waiver, waivers_for, write_vlt

#: Blanket Verilator waivers: none. (DECLFILENAME needs none either: MyHDL names each file after its
#: module.) Known harmless warnings are waived one by one, see :mod:`accelerator.rtl.waivers`.
VERILATOR_WAIVED: tuple[str, ...] = ()


def convert(bench: Bench, hdl: str, out_dir: Path) -> list[Path]:
    """Write ``<name>.v`` or ``<name>.vhd`` (plus MyHDL's VHDL package) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ports = {**bench.ports(), "clk": Signal(bool(0))}
    inst = bench.dut(ports)
    extra = {"testbench": False} if hdl.lower() == "verilog" else {}
    with warnings.catch_warnings():
        # constants (e.g. the TAS reciprocal) are undriven signals on purpose
        warnings.filterwarnings("ignore", message=".*Signal is not driven.*")
        inst.convert(hdl=hdl, path=str(out_dir), name=bench.name, **extra)
    if hdl.lower() == "verilog":
        return [out_dir / f"{bench.name}.v"]
    return sorted(out_dir.glob("pck_myhdl_*.vhd")) + [out_dir / f"{bench.name}.vhd"]


@dataclass
class LintResult:
    tool: str
    ok: bool
    skipped: str = ""
    log: str = ""


def iverilog_compile(vfile: Path) -> LintResult:
    if missing("iverilog"):
        return LintResult("iverilog", False, skipped="iverilog not installed")
    try:
        run(["iverilog", "-Wall", "-o", str(vfile.with_suffix(".vvp")), str(vfile)])
        return LintResult("iverilog", True)
    except RuntimeError as exc:
        return LintResult("iverilog", False, log=str(exc))


def verilator_lint(vfile: Path, top: str, waivers: list[Waiver] | None = None) -> LintResult:
    """``verilator --lint-only -Wall`` with ``waivers`` (a ``.vlt`` written next to ``vfile``) only."""
    if missing("verilator"):
        return LintResult("verilator", False, skipped="verilator not installed")
    vlt = write_vlt(waivers or [], vfile.with_name(f"{vfile.stem}_waivers.vlt"))
    try:
        run(
            [
                "verilator",
                "--lint-only",
                "-Wall",
                *VERILATOR_WAIVED,
                "--top-module",
                top,
                str(vlt),
                str(vfile),
            ]
        )
        return LintResult("verilator", True)
    except RuntimeError as exc:
        return LintResult("verilator", False, log=str(exc))


def ghdl_analyse(files: list[Path]) -> LintResult:
    if missing("ghdl"):
        return LintResult("ghdl", False, skipped="ghdl not installed")
    work = files[-1].parent / "ghdl-work"
    work.mkdir(exist_ok=True)
    try:
        run(["ghdl", "-a", "--std=08", f"--workdir={work}", *map(str, files)])
        run(["ghdl", "-e", "--std=08", f"--workdir={work}", files[-1].stem], cwd=work)
        return LintResult("ghdl", True)
    except RuntimeError as exc:
        return LintResult("ghdl", False, log=str(exc))


def tool_checks(bench: Bench, out_dir: Path | None = None) -> dict[str, LintResult]:
    """Convert to both languages and run every available checker: iverilog, verilator, ghdl."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(dir=cache_dir("convert")) as tmp:
            return tool_checks(bench, Path(tmp))
    vfile = convert(bench, "Verilog", out_dir)[0]
    vhdl = convert(bench, "VHDL", out_dir)
    return {
        "iverilog": iverilog_compile(vfile),
        "verilator": verilator_lint(vfile, bench.name, waivers_for(bench)),
        "ghdl": ghdl_analyse(vhdl),
    }
