"""Replay check of the converted VHDL under GHDL: the MyHDL run's inputs in, every output compared.

MyHDL co-simulates Verilog only (the Icarus VPI), so the VHDL is checked with golden vectors instead: the
MyHDL simulation records every input port as sampled at each rising edge (the driver's stimulus and the
memory models' responses alike) and every output port after it; a generated VHDL test bench applies the
same inputs to the converted entity cycle by cycle and writes its outputs; they must be identical on every
cycle. Since the module is deterministic, replaying the recorded memory responses is exact: if the VHDL
drove a different address, its outputs would already differ.

The VHDL is converted with initial values (``initial_values=True``) so that registers without a reset
start at 0, as in MyHDL.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from myhdl import Signal

from accelerator.rtl.harness import Bench, simulate
from accelerator.rtl.tools import cache_dir, missing, run

PORT_RE = re.compile(r"^\s*(\w+): (in|out) (std_logic|(?:unsigned|signed) ?\((\d+) downto 0\))", re.M)


@dataclass(frozen=True)
class Port:
    name: str
    direction: str
    vhdl_type: str
    width: int

    @property
    def scalar(self) -> bool:
        return self.vhdl_type == "std_logic"


def entity_ports(vhd: Path) -> list[Port]:
    text = vhd.read_text()
    entity = text[text.index("entity ") : text.index("end entity")]
    return [Port(m[1], m[2], m[3], int(m[4]) + 1 if m[4] else 1) for m in PORT_RE.finditer(entity)]


def _bits(value: int, width: int) -> str:
    return format(int(value) & ((1 << width) - 1), f"0{width}b")


def _testbench(top: str, ports: list[Port]) -> str:
    ins = [p for p in ports if p.direction == "in" and p.name != "clk"]
    outs = [p for p in ports if p.direction == "out"]
    decls = "\n".join(f"    signal {p.name}: {p.vhdl_type};" for p in ports if p.name != "clk")
    pmap = ",\n".join(f"        {p.name} => {p.name}" for p in ports)
    variables = "\n".join(
        f"        variable v_{p.name}: std_logic_vector({p.width - 1} downto 0);" for p in ins
    )
    reads = []
    for p in ins:
        reads.append(f"            read(li, v_{p.name});")
        if p.scalar:
            reads.append(f"            {p.name} <= v_{p.name}(0);")
        else:
            kind = p.vhdl_type.split("(")[0]
            reads.append(f"            {p.name} <= {kind}(v_{p.name});")
    writes = []
    for i, p in enumerate(outs):
        value = f"std_logic_vector'(0 => {p.name})" if p.scalar else f"std_logic_vector({p.name})"
        sep = "" if i == 0 else '            write(lo, string\'(" "));\n'
        writes.append(f"{sep}            write(lo, {value});")
    return f"""library IEEE;
use IEEE.std_logic_1164.all;
use IEEE.numeric_std.all;
use std.textio.all;

entity replay_tb is
end entity replay_tb;

architecture sim of replay_tb is
    signal clk: std_logic := '0';
{decls}
begin
    dut: entity work.{top} port map (
{pmap}
    );

    stimulus: process
        file fin: text open read_mode is "inputs.txt";
        file fout: text open write_mode is "outputs.txt";
        variable li, lo: line;
{variables}
    begin
        while not endfile(fin) loop
            readline(fin, li);
{chr(10).join(reads)}
            wait for 5 ns;
            clk <= '1';
            wait for 5 ns;
            clk <= '0';
            wait for 0 ns;
{chr(10).join(writes)}
            writeline(fout, lo);
        end loop;
        wait;
    end process;
end architecture sim;
"""


@dataclass
class ReplayResult:
    ok: bool
    cycles: int
    skipped: str = ""
    detail: str = ""


def ghdl_replay(bench: Bench) -> ReplayResult:
    """Run ``bench`` on the MyHDL model, replay its port trace on the VHDL under GHDL, compare outputs."""
    if missing("ghdl"):
        return ReplayResult(False, 0, skipped="ghdl not installed")
    with tempfile.TemporaryDirectory(dir=cache_dir("ghdl-replay")) as tmp:
        work = Path(tmp)
        conv = {**bench.ports(), "clk": Signal(bool(0))}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Signal is not driven.*")
            bench.dut(conv).convert(hdl="VHDL", path=str(work), name=bench.name, initial_values=True)
        vhd = work / f"{bench.name}.vhd"
        ports = entity_ports(vhd)
        ins = [p for p in ports if p.direction == "in" and p.name != "clk"]
        outs = [p for p in ports if p.direction == "out"]
        record = {"inputs": [p.name for p in ins], "outputs": [p.name for p in outs]}
        simulate(bench, "myhdl", record=record)
        (work / "inputs.txt").write_text(
            "".join(
                " ".join(_bits(v, p.width) for v, p in zip(row, ins, strict=True)) + "\n"
                for row in record["in"]
            )
        )
        (work / "replay_tb.vhd").write_text(_testbench(bench.name, ports))
        pkgs = sorted(work.glob("pck_myhdl_*.vhd"))
        std = ["--std=08", f"--workdir={work}"]
        run(["ghdl", "-a", *std, *map(str, pkgs), str(vhd), str(work / "replay_tb.vhd")], cwd=work)
        run(["ghdl", "-e", *std, "replay_tb"], cwd=work)
        run(["ghdl", "-r", *std, "replay_tb", "--ieee-asserts=disable"], cwd=work, timeout=1800)
        got = [ln.split() for ln in (work / "outputs.txt").read_text().splitlines()]
    want = [[_bits(v, p.width) for v, p in zip(row, outs, strict=True)] for row in record["out"]]
    n = min(len(got), len(want))
    if n < len(record["in"]) - 1:
        return ReplayResult(False, n, detail=f"VHDL produced {len(got)} cycles, MyHDL {len(want)}")
    for c in range(n):
        if got[c] != want[c]:
            diff = [p.name for p, a, b in zip(outs, got[c], want[c], strict=True) if a != b]
            return ReplayResult(False, n, detail=f"cycle {c}: outputs {', '.join(diff)} differ")
    return ReplayResult(True, n)
