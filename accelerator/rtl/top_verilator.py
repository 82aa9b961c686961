"""The top level converted to Verilog and run under Verilator, for layers too large for a MyHDL simulation.

``build(P)`` converts ``machine_top`` for the parameters ``P``, writes a C++ testbench for its ports and
compiles both with Verilator into the private RTL build cache (``accelerator.rtl.tools``; one build per
parameter set, tool versions and accelerator sources). The testbench reads the layer's program and
registers and the memory channels from a stimulus file, holds ``go`` for one edge, and then plays the
memory model of ``accelerator.rtl.top_bench`` (first come first served per channel, whole bursts,
bytes per cycle, latency) cycle by cycle until ``layer_done``; it prints every record finish and the
layer's cycles.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path

from myhdl import Signal

from accelerator.rtl.tools import build_key, cache_dir, missing, run, sources_digest, tool_version
from accelerator.rtl.top import TopParams, machine_top, top_ports

#: Ports the stimulus file sets, in order (after the program).
REGISTERS = (
    "batch",
    "index0",
    "qkv_target",
    "tas_target",
    "o_target",
    "down_target",
    "keys",
    "keys_write",
    "kv_bytes",
    "decisions",
)

_TB = r"""
#include "Vmachine_top.h"
#include "verilated.h"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <vector>

static uint64_t rd(FILE* f) {
    unsigned long long v = 0;
    if (fscanf(f, "%llx", &v) != 1) { fprintf(stderr, "stimulus: short file\n"); exit(2); }
    return v;
}

int main(int argc, char** argv) {
    if (argc < 3) { fprintf(stderr, "usage: tb STIMULUS LIMIT\n"); return 2; }
    FILE* f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    long long limit = atoll(argv[2]);
    Verilated::commandArgs(1, argv);
    Vmachine_top* top = new Vmachine_top;
    auto edge = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); };
    top->rst = 1; edge(); edge(); top->rst = 0;
    int n = (int) rd(f);
    for (int a = 0; a < n; a++) { top->iw_we = 1; top->iw_addr = a; top->iw_data = rd(f); edge(); }
    top->iw_we = 0;
    top->n_instr = n;
@REGISTERS@
    int groups = (int) rd(f);
    std::vector<long double> rate(groups), lat(groups), freeat(groups, 0.0L);
    std::vector<uint64_t> burst(groups);
    for (int g = 0; g < groups; g++) {
        long double rn = rd(f), rdn = rd(f), ln = rd(f), ld = rd(f);
        rate[g] = rn / rdn; lat[g] = ln / ld; burst[g] = rd(f);
    }
    const int R = @REQUESTERS@;
    std::map<long long, uint64_t> due;
    top->go = 1; edge(); top->go = 0; top->mem_done = 0; top->eval();
    for (long long t = 0; t < limit; t++) {
        if (top->layer_done) { printf("cycles %lld\n", t - 1); return 0; }
        uint64_t fin = (uint64_t) top->fin;
        for (int r = 0; r < R; r++) if (fin >> r & 1) printf("fin %lld %d\n", t, r);
        uint64_t valid = (uint64_t) top->req_valid;
        uint64_t group = (uint64_t) top->req_group;
        for (int r = 0; r < R; r++) {
            if (!(valid >> r & 1)) continue;
            uint64_t bytes = @REQ_BYTES@;
            int g = (int) (group >> (2 * r) & 3);
            uint64_t rounded = (bytes + burst[g] - 1) / burst[g] * burst[g];
            long double start = freeat[g] > (long double) t ? freeat[g] : (long double) t;
            freeat[g] = start + rounded / rate[g];
            long long done = (long long) ceill(freeat[g] + lat[g] - 1e-9L);
            if (due[done] >> r & 1) { fprintf(stderr, "requester %d: two completions in one cycle\n", r); return 3; }
            due[done] |= 1ULL << r;
        }
        edge();
        auto it = due.find(t + 1);
        top->mem_done = it == due.end() ? 0 : it->second;
        if (it != due.end()) due.erase(it);
        top->eval();
    }
    printf("timeout %lld\n", limit);
    return 0;
}
"""


def _register_code(ports: dict) -> str:
    lines = []
    for name in REGISTERS:
        width = len(ports[name])
        if width <= 64:
            lines.append(f"    top->{name} = rd(f);")
        else:
            words = -(-width // 32)
            lines.append(f"    for (int i = 0; i < {words}; i++) top->{name}[i] = (uint32_t) rd(f);")
    return "\n".join(lines)


def register_tokens(ports: dict, values: dict) -> list[str]:
    out = []
    for name in REGISTERS:
        width, v = len(ports[name]), int(values[name])
        if width <= 64:
            out.append(f"{v:x}")
        else:
            out += [f"{v >> (32 * i) & 0xFFFFFFFF:x}" for i in range(-(-width // 32))]
    return out


def build(P: TopParams, progress=None) -> Path:
    """The compiled simulation of the top level for ``P`` (cached)."""
    absent = missing("verilator")
    if absent:
        raise RuntimeError("verilator not installed")
    key = build_key("machine_top", repr(asdict(P)), sources_digest(), tool_version("verilator"), _TB)
    work = cache_dir("top", key)
    binary = work / "obj" / "Vmachine_top"
    if binary.exists():
        return binary
    t0 = time.perf_counter()
    ports = top_ports(P)
    clk = Signal(bool(0))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        machine_top(clk, **ports, P=P).convert(
            hdl="Verilog", path=str(work), name="machine_top", testbench=False
        )
    requesters = P.cores + 2
    req_bytes = (
        "(uint64_t) top->req_bytes[r]"
        if requesters * 32 > 64
        else "(uint64_t) (top->req_bytes >> (32 * r) & 0xFFFFFFFFULL)"
    )
    tb = _TB.replace("@REGISTERS@", _register_code(ports)).replace("@REQUESTERS@", str(requesters))
    (work / "tb.cpp").write_text(tb.replace("@REQ_BYTES@", req_bytes))
    if progress:
        progress(f"converted to Verilog in {time.perf_counter() - t0:.1f} s; compiling with Verilator")
    run(
        [
            "verilator",
            "--cc",
            "machine_top.v",
            "--exe",
            "tb.cpp",
            "--build",
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "-Wno-fatal",
            "-Wno-lint",
            "-Wno-style",
            "-Wno-UNOPTFLAT",
            "-j",
            "2",
            "--Mdir",
            "obj",
            "-CFLAGS",
            "-O2",
        ],
        cwd=work,
        timeout=7200,
    )
    if progress:
        progress(f"built in {time.perf_counter() - t0:.1f} s")
    return binary


def simulate(
    binary: Path, stimulus: list[str], limit: int, workdir: Path
) -> tuple[int | None, list[tuple[int, int]]]:
    """Run the compiled top level; (layer cycles or None on timeout, sorted record finishes)."""
    path = workdir / "stimulus.txt"
    path.write_text(" ".join(stimulus) + "\n")
    proc = run([str(binary), str(path), str(limit)], timeout=7200)
    cycles, fins = None, []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "fin":
            fins.append((int(parts[1]), int(parts[2])))
        elif parts[0] == "cycles":
            cycles = int(parts[1])
    return cycles, sorted(fins)
