"""GEMV tile: ``LANES`` int8 x int16 MAC lanes, output stationary, the timing of ``cost.gemv_cycles``.

Lane r of tile t owns output row ``t * LANES + r`` and consumes one input element per cycle, so one tile
takes ``cols`` cycles and tiles issue back to back. Per element i the pipeline is:

* edge i:      address stage -- the column counter addresses the on-tile input-vector buffer (BRAM) and
  the weight stream port (one ``LANES``-wide column of the tile per beat, tile-major order);
* edge i+1:    the BRAM and weight port deliver x[c] and W[t*LANES:(t+1)*LANES, c];
* edge i+2:    lane products registered (DSP48E2 PREG);
* (EXTRA more product registers, e.g. DSP MREG, when ``EXTRA > 0``);
* edge i+3+EXTRA: accumulate; on a tile's last column the lane results are registered out (``y_valid``),
  and on the instruction's last element ``done``.

So an instruction of ``ceil(rows/LANES) * cols`` elements takes ``n + 3 + EXTRA`` edges:
``pe_pipeline_cycles`` = 3 + EXTRA. EXTRA is the documented timing knob: set it to 1 and the cross-check
fails until ``HardwareSpec.pe_pipeline_cycles`` is raised to 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from myhdl import ConcatSignal, ResetSignal, Signal, always, always_comb, always_seq, block, intbv

from accelerator.cost import ceil_div, gemv_cycles
from accelerator.rtl.common import (
    bits_for,
    delay_reg,
    flag_reg,
    mul_reg,
    pack,
    signed_sig,
    unpack,
    unsigned_sig,
    wire,
)
from accelerator.rtl.harness import Bench, event_setup

BASE_PIPELINE_CYCLES = 3


def xbuf_addr_bits(max_cols: int) -> int:
    """Address bits of the ``max_cols``-word input buffer (14 for 16,384 words)."""
    return bits_for(max_cols - 1)


def accumulator_bits(w_bits: int, x_bits: int, cols: int) -> int:
    """Signed bits that hold any sum of ``cols`` products of two's-complement operands: the largest
    product is (-2^(w-1)) x (-2^(x-1)) = 2^(w+x-2), so the sum reaches cols x 2^(w+x-2) (all operands at
    their most negative), which needs its bit length plus a sign bit."""
    return (cols << (w_bits + x_bits - 2)).bit_length() + 1


@dataclass(frozen=True)
class GemvParams:
    lanes: int = 8
    w_bits: int = 8  #: weight precision (HardwareSpec.precision.weights_bits)
    x_bits: int = 16  #: activation precision
    acc_bits: int = 40  #: accumulator: w_bits + x_bits + log2(max cols) + guard
    max_cols: int = 256  #: depth of the input-vector buffer (BRAM); 16384 covers 7B-class MLPs
    row_bits: int = 16  #: width of the runtime ``rows`` register
    waddr_bits: int = (
        24  #: weight-stream beat address width (16 M beats: a 7B model's largest matrix at 8 lanes)
    )
    extra: int = 0  #: extra product pipeline registers (timing knob)

    def __post_init__(self) -> None:
        need = accumulator_bits(self.w_bits, self.x_bits, self.max_cols)
        if self.acc_bits < need:
            raise ValueError(
                f"acc_bits {self.acc_bits} cannot hold {self.max_cols} products of {self.w_bits}-bit weights "
                f"and {self.x_bits}-bit inputs: needs {need}"
            )

    @property
    def pipeline_cycles(self) -> int:
        return BASE_PIPELINE_CYCLES + self.extra

    def kwargs(self) -> dict:
        return {k.upper(): v for k, v in asdict(self).items()}


@block
def pe_lane(clk, w, x, valid_d, first_d, last_d, y, WB, XB, ACCW, EXTRA):
    """One MAC lane: registered product, optional extra stages, accumulator and result register.

    ``y`` is the result as raw bits, so the tile can concatenate lanes into one bus in VHDL too.
    """
    p0 = signed_sig(WB + XB)
    insts = [mul_reg(clk, w, x, p0)]
    stages = [p0] + [signed_sig(WB + XB) for _ in range(EXTRA)]
    for k in range(EXTRA):
        insts.append(delay_reg(clk, stages[k], stages[k + 1]))
    pd = stages[-1]
    acc = signed_sig(ACCW)
    y_s = signed_sig(ACCW)

    @always(clk.posedge)
    def accumulate():
        if valid_d:
            if first_d:
                acc.next = pd
                if last_d:
                    y_s.next = pd
            else:
                acc.next = acc + pd
                if last_d:
                    y_s.next = acc + pd

    @always_comb
    def as_bits():
        y.next = y_s[ACCW:]

    return insts, accumulate, as_bits


@block
def gemv_tile(
    clk,
    rst,
    start,
    rows,
    cols,
    busy,
    done,
    w_addr,
    w_data,
    xb_we,
    xb_waddr,
    xb_wdata,
    y_valid,
    y_row,
    y,
    LANES,
    W_BITS,
    X_BITS,
    ACC_BITS,
    MAX_COLS,
    ROW_BITS,
    WADDR_BITS,
    EXTRA,
    err=None,
    x_raddr=None,
    x_rdata=None,
):
    """y = W x for a ``rows x cols`` matrix streamed tile-major through ``w_addr``/``w_data``.

    ``xb_*`` load the input vector into the tile's buffer before ``start`` (done by the previous phase,
    so not part of the instruction's cycles); ``xb_waddr`` is ``xbuf_addr_bits(MAX_COLS)`` wide.

    Input guard: a ``start`` with ``cols`` outside 1..MAX_COLS or ``rows`` outside 1..2^ROW_BITS - 1 (the
    upper bound matters only when ``rows`` is driven wider than ROW_BITS) is refused: nothing starts, and
    the sampling edge registers ``done`` and ``err`` together (a one-edge job). ``err`` is 0 with the
    ``done`` of every accepted instruction. ``err`` may be left out (``None``) by an instantiating design.

    With ``x_raddr``/``x_rdata`` given, the input vector is read from an outside memory instead of the
    tile's buffer (``xb_*`` unused): ``x_raddr`` is the column, and ``x_rdata`` must be that memory's
    registered read of it (valid one edge later, as the buffer's own read).
    """
    if err is None:
        err = Signal(bool(0))
    external_x = x_raddr is not None
    CB = bits_for(MAX_COLS)
    AB = xbuf_addr_bits(MAX_COLS)
    ROW_MAX = (1 << ROW_BITS) - 1
    ROWS_WIDE = len(rows) > ROW_BITS
    x_addr = Signal(intbv(0)[CB:])  # counts up to cols - 1 < MAX_COLS; the buffer takes its AB low bits
    x_q = x_rdata if external_x else Signal(intbv(0)[X_BITS:])
    rows_r = Signal(intbv(0)[ROW_BITS:])
    cols_r = Signal(intbv(0)[CB + 1 :])
    rb = Signal(intbv(0)[ROW_BITS + bits_for(LANES) + 2 :])
    # the row base of an emitted tile is below ``rows`` <= ROW_MAX, so it fits the ``y_row`` port exactly
    orb = Signal(intbv(0)[ROW_BITS:])
    bad = Signal(bool(0))
    va, fa, la, za = (Signal(bool(0)) for _ in range(4))
    flags_a = ConcatSignal(va, fa, la, za)
    fchain = [Signal(intbv(0)[4:]) for _ in range(2 + EXTRA)]
    insts = [flag_reg(clk, rst, flags_a, fchain[0])]
    for k in range(1 + EXTRA):
        insts.append(flag_reg(clk, rst, fchain[k], fchain[k + 1]))
    fd = fchain[-1]
    vd, fdd, ld, zd = fd(3), fd(2), fd(1), fd(0)

    y_lanes = [unsigned_sig(ACC_BITS) for _ in range(LANES)]
    for r in range(LANES):
        insts.append(
            pe_lane(
                clk,
                w_data((r + 1) * W_BITS, r * W_BITS),
                x_q,
                vd,
                fdd,
                ld,
                y_lanes[r],
                WB=W_BITS,
                XB=X_BITS,
                ACCW=ACC_BITS,
                EXTRA=EXTRA,
            )
        )
    y_cat = ConcatSignal(*reversed(y_lanes)) if LANES > 1 else y_lanes[0]

    if ROWS_WIDE:

        @always_comb
        def guard():
            bad.next = cols == 0 or cols > MAX_COLS or rows == 0 or rows > ROW_MAX

    else:

        @always_comb
        def guard():
            bad.next = cols == 0 or cols > MAX_COLS or rows == 0

    if external_x:
        insts.append(wire(x_addr, x_raddr))
    else:
        xmem = [Signal(intbv(0)[X_BITS:]) for _ in range(MAX_COLS)]

        @always(clk.posedge)
        def xbuf_write():
            if xb_we:
                xmem[xb_waddr].next = xb_wdata

        @always(clk.posedge)
        def xbuf_read():
            x_q.next = xmem[x_addr[AB:]]

        insts += [xbuf_write, xbuf_read]

    @always_seq(clk.posedge, reset=rst)
    def control():
        if va and not za:
            if la:
                x_addr.next = 0
                rb.next = rb + LANES
                fa.next = 1
                la.next = cols_r == 1
                za.next = cols_r == 1 and rb + 2 * LANES >= rows_r
            else:
                x_addr.next = x_addr + 1
                fa.next = 0
                la.next = x_addr + 2 == cols_r
                za.next = x_addr + 2 == cols_r and rb + LANES >= rows_r
            w_addr.next = w_addr + 1
            va.next = 1
        elif start and not busy and not bad:
            busy.next = 1
            rows_r.next = rows
            cols_r.next = cols
            x_addr.next = 0
            w_addr.next = 0
            rb.next = 0
            va.next = 1
            fa.next = 1
            la.next = cols == 1
            za.next = cols == 1 and rows <= LANES
        else:
            va.next = 0
        if vd and zd:
            busy.next = 0

    @always_seq(clk.posedge, reset=rst)
    def emit():
        y_valid.next = vd and ld
        done.next = (vd and zd) or (start and not busy and bad)
        err.next = start and not busy and bad
        if vd and ld:
            y_row.next = orb
            if zd:
                orb.next = 0
            else:
                orb.next = orb + LANES

    if LANES > 1:

        @always_comb
        def drive_y():
            y.next = y_cat

    else:

        @always_comb
        def drive_y():
            y.next = y_cat

    return insts, guard, control, emit, drive_y


# ---------------------------------------------------------------------------------------------------
# Bench: the three views of a phase sequence (QKV projection, then the MLP) on one core's tile
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemvJob:
    """One GEMV instruction: integer weights (rows x cols) and input vector (cols)."""

    w: np.ndarray
    x: np.ndarray


class GemvBench(Bench):
    """Jobs are the GEMV instructions of a decode step's QKV and MLP phases for ``dims`` on one core."""

    name = "gemv_tile"

    def __init__(
        self, params: GemvParams, jobs: list[GemvJob], dims: dict | None = None, spec_pipeline_cycles: int = 3
    ) -> None:
        super().__init__(params, jobs)
        self.dims = dims or {}
        #: ``HardwareSpec.pe_pipeline_cycles`` of the cost model this bench checks against (spec default 3)
        self.spec_pipeline_cycles = spec_pipeline_cycles
        self._wmem: list[int] = []
        self._out: list[list[int | None]] = [[None] * job.w.shape[0] for job in jobs]

    def fresh(self) -> GemvBench:
        return GemvBench(self.params, self.jobs, self.dims, self.spec_pipeline_cycles)

    def ports(self) -> dict:
        p = self.params
        cb = bits_for(p.max_cols)
        return {
            "rst": ResetSignal(0, active=1, isasync=False),
            "start": Signal(bool(0)),
            "rows": unsigned_sig(p.row_bits),
            "cols": unsigned_sig(cb + 1),
            "busy": Signal(bool(0)),
            "done": Signal(bool(0)),
            "w_addr": unsigned_sig(p.waddr_bits),
            "w_data": unsigned_sig(p.lanes * p.w_bits),
            "xb_we": Signal(bool(0)),
            "xb_waddr": unsigned_sig(xbuf_addr_bits(p.max_cols)),
            "xb_wdata": unsigned_sig(p.x_bits),
            "y_valid": Signal(bool(0)),
            "y_row": unsigned_sig(p.row_bits),
            "y": unsigned_sig(p.lanes * p.acc_bits),
            "err": Signal(bool(0)),
        }

    def module(self):
        return gemv_tile

    @block
    def environment(self, clk, ports):
        wmem = self._wmem
        w_addr, w_data = ports["w_addr"], ports["w_data"]

        @always(clk.posedge)
        def weight_port():
            a = int(w_addr.val)
            w_data.next = wmem[a] if a < len(wmem) else 0

        return [weight_port]

    def preload(self, ports: dict, job: GemvJob):
        """Write the input vector into the tile buffer, one word per cycle, before the instruction."""
        for c, v in enumerate(job.x):
            ports["xb_we"].next = 1
            ports["xb_waddr"].next = c
            ports["xb_wdata"].next = int(v) & ((1 << self.params.x_bits) - 1)
            yield
        ports["xb_we"].next = 0

    def load(self, ports: dict, job: GemvJob) -> None:
        p = self.params
        rows, cols = job.w.shape
        tiles = ceil_div(rows, p.lanes)
        wpad = np.zeros((tiles * p.lanes, cols), dtype=np.int64)
        wpad[:rows] = job.w
        self._wmem[:] = [
            pack(wpad[t * p.lanes : (t + 1) * p.lanes, c], p.w_bits)
            for t in range(tiles)
            for c in range(cols)
        ]
        ports["rows"].next = rows
        ports["cols"].next = cols

    def observe(self, ports: dict, index: int) -> None:
        if ports["y_valid"]:
            p = self.params
            base = int(ports["y_row"].val)
            out = self._out[index]
            for r, v in enumerate(unpack(int(ports["y"].val), p.acc_bits, p.lanes)):
                if base + r < len(out):
                    out[base + r] = v

    def outputs(self) -> list[list[int | None]]:
        return self._out

    def reference(self) -> list[list[int]]:
        return [[int(v) for v in job.w.astype(np.int64) @ job.x.astype(np.int64)] for job in self.jobs]

    def cost_cycles(self) -> list[int]:
        return [
            int(gemv_cycles(j.w.shape[0], j.w.shape[1], self.params.lanes, self.spec_pipeline_cycles))
            for j in self.jobs
        ]

    def event_cycles(self) -> int:
        """The event view: one core runs the QKV phase then the MLP phase of one batch entry."""
        from accelerator.core import Core

        env, cost, memory, timeline = event_setup(
            {"lanes_per_core": self.params.lanes, "pe_pipeline_cycles": self.spec_pipeline_cycles}, self.dims
        )
        core = Core(env, 0, cost, memory, timeline)
        # the tile alone: the output writer's drain after each instruction (cost.block_drain) is not here
        qkv = replace(cost.qkv(1), cycles=cost.qkv(1).cycles - cost.drains(1, "qkv"))
        mlp = replace(cost.mlp(1), cycles=cost.mlp(1).cycles - cost.drains(1, "up", "down"))
        core.execute("qkv", qkv, 1)
        return int(round(core.execute("mlp", mlp, 1)))


def gemv_case(rng: np.random.Generator, extra: int = 0, max_lanes: int = 12) -> GemvBench:
    """A random model shape, lane count and data: the QKV and MLP GEMVs of one decode step."""
    heads = int(rng.choice([1, 2, 4]))
    kv_heads = int(rng.choice([k for k in (1, 2, 4) if heads % k == 0]))
    head_dim = int(rng.integers(2, 9))
    hidden = int(rng.integers(3, 33))
    mlp_hidden = int(rng.integers(3, 41))
    kind = str(rng.choice(["swiglu", "gelu"]))
    lanes = int(rng.integers(1, max_lanes + 1))
    dims = dict(
        hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim, mlp_hidden=mlp_hidden, mlp_kind=kind
    )
    q_rows = (heads + 2 * kv_heads) * head_dim
    mlp_in = (2 if kind == "swiglu" else 1) * mlp_hidden
    shapes = [(q_rows, hidden), (mlp_in, hidden), (hidden, mlp_hidden)]
    p = GemvParams(
        lanes=lanes, max_cols=max(16, 1 << (max(hidden, mlp_hidden) - 1).bit_length()), extra=extra
    )
    jobs = [
        GemvJob(
            w=rng.integers(-(1 << (p.w_bits - 1)), 1 << (p.w_bits - 1), size=shape),
            x=rng.integers(-(1 << (p.x_bits - 1)), 1 << (p.x_bits - 1), size=shape[1]),
        )
        for shape in shapes
    ]
    return GemvBench(p, jobs, dims)
