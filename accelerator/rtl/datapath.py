"""The top level's data path: where activations live, and the writer that puts a tile's outputs there.

Activation memory. One memory of A-bit activations (held in 16-bit words) shared by the cores: each core
reads its tile's input vector from it one element per cycle (the tile's ``x`` port, a registered read),
and writes its outputs into it ``port`` elements per cycle (``input_write_elems_per_cycle``), so a GEMV's
input is where the phase before wrote it and no separate input write exists. Entry e owns the regions of
``ActLayout`` at ``e * stride``:

* ``x`` the layer input, ``qkv`` q|k|v, ``att`` the attention output, ``h = x + o``,
* ``gu`` the gate half, then the up half overwritten by ``a = silu(g) * u`` as it is produced,
* ``d`` the MLP output (computed or replayed), ``y = h + d`` the layer output.

The memory is a testbench model (``top_verilator``): a real build would hold it in BRAM/URAM, which the
resource estimate counts beside the top level.

Output writer (one per core). When the tile emits a tile of accumulators (``y_valid``) the writer takes it
into a drain register and writes ``port`` elements per cycle, each requantised (``sat(rs(acc, shift))``,
the shift of the matrix) and combined with one operand it reads from the memory, by matrix:

* qkv: store; o: ``h = sat(x + o)``; up: gate rows store, up rows ``a = sat(rs(SILU[g >> (A-8)] * u,
  s_act))``; down: store ``d`` and ``y = sat(h + d)`` (its second write port).

A tile emitted while the previous one is still draining is an overrun: ``overrun`` latches, and the bench
reports it (the cost model assumes a tile's outputs leave during the next tile, ``lanes / port <= cols``).
Two stages: the requantisation and the operand read, then the combine and the write.
"""

from __future__ import annotations

from dataclasses import dataclass

from myhdl import ConcatSignal, ResetSignal, Signal, always, always_comb, always_seq, block

from accelerator.rtl.common import bits_for, signed_sig, unsigned_sig, wire
from accelerator.rtl.harness import Bench
from accelerator.rtl.layer_numerics import SILU, SILU_INDEX_BITS
from accelerator.rtl.softmax import QUOTIENT_BITS

WORD_BITS = 16  # one activation in the memory
SHIFT_BITS = 6
QKV_M, O_M, UP_M, DOWN_M = 0, 1, 2, 3  # accelerator.isa.MATRICES
REGIONS = ("x", "qkv", "att", "h", "gu", "d", "y")


@dataclass(frozen=True)
class ActLayout:
    hidden: int
    q_dim: int
    kv_dim: int
    mlp: int
    entries: int

    def sizes(self) -> dict[str, int]:
        return {
            "x": self.hidden,
            "qkv": self.q_dim + 2 * self.kv_dim,
            "att": self.q_dim,
            "h": self.hidden,
            "gu": 2 * self.mlp,
            "d": self.hidden,
            "y": self.hidden,
        }

    def offset(self, region: str) -> int:
        out = 0
        for name, size in self.sizes().items():
            if name == region:
                return out
            out += size
        raise KeyError(region)

    @property
    def stride(self) -> int:
        return sum(self.sizes().values())

    @property
    def words(self) -> int:
        return self.entries * self.stride

    @property
    def addr_bits(self) -> int:
        return bits_for(self.words)

    def base(self, entry: int, region: str) -> int:
        return entry * self.stride + self.offset(region)


@block
def two_write_ports(d0s, d1s, addr0, addr1, en0, en1, data, addr, en):
    """A writer's two activation-memory write ports as flat buses: port 0 (``d0s`` at ``addr0``) in the
    low half of each, port 1 above it."""
    n = len(d0s) * WORD_BITS
    data0, data1 = unsigned_sig(n), unsigned_sig(n)
    return [
        wire(ConcatSignal(*reversed(d0s)) if len(d0s) > 1 else d0s[0], data0),
        wire(ConcatSignal(*reversed(d1s)) if len(d1s) > 1 else d1s[0], data1),
        wire(ConcatSignal(data1, data0), data),
        wire(ConcatSignal(addr1, addr0), addr),
        wire(ConcatSignal(en1, en0), en),
    ]


@block
def saturate(v, out, A):
    """``out`` = v clipped to the A-bit two's-complement range."""
    HI, LO = (1 << (A - 1)) - 1, -(1 << (A - 1))

    @always_comb
    def clip():
        if v > HI:
            out.next = HI
        elif v < LO:
            out.next = LO
        else:
            out.next = v

    return clip


@block
def scale_lane(raw, scale, out, OW):
    """An accumulator times the writer's scale (the softmax reciprocal for attention outputs, else 1)."""
    ps = signed_sig(OW)

    @always_comb
    def multiply():
        ps.next = raw.signed() * scale

    @always_comb
    def bits():
        out.next = ps[OW:]

    return multiply, bits


@block
def writer_lane(clk, acc, c, shift, s_act, matrix1, gate1, d0, d1, ACC_BITS, A):
    """One element of the writer: requantise (stage 0, registered), combine with ``c`` (stage 1). The
    rounding shift ``rs(v, s) = (v + 2^(s-1)) >> s`` is computed as ``((v >> (s-1)) + 1) >> 1`` (equal for
    s >= 1), and as ``(2v) >> 1 = v`` for s = 0."""
    t0 = signed_sig(ACC_BITS + 1)
    r0 = signed_sig(ACC_BITS)
    rq0, rq1, cs, f, gs = (signed_sig(WORD_BITS) for _ in range(5))
    idx = unsigned_sig(SILU_INDEX_BITS)
    prod = signed_sig(2 * WORD_BITS + 1)
    t1 = signed_sig(2 * WORD_BITS + 2)
    g1 = signed_sig(2 * WORD_BITS)
    s1 = signed_sig(WORD_BITS + 1)
    sh1 = unsigned_sig(SHIFT_BITS)
    insts = [saturate(r0, rq0, A=A), saturate(s1, d1, A=A), saturate(g1, gs, A=A)]

    @always_comb
    def rounding():
        if shift == 0:
            t0.next = acc.signed() << 1
        else:
            t0.next = (acc.signed() >> (shift - 1)) + 1

    @always_comb
    def halve():
        r0.next = t0 >> 1

    @always(clk.posedge)
    def stage():
        rq1.next = rq0
        sh1.next = s_act

    @always_comb
    def operand():
        cs.next = c.signed()

    @always_comb
    def index():
        idx.next = cs[A : A - SILU_INDEX_BITS]

    @always_comb
    def silu_rom():
        f.next = SILU[idx]

    @always_comb
    def gate_product():
        prod.next = f * rq1
        s1.next = rq1 + cs

    @always_comb
    def gate_round():
        if sh1 == 0:
            t1.next = prod << 1
        else:
            t1.next = (prod >> (sh1 - 1)) + 1

    @always_comb
    def gate_halve():
        g1.next = t1 >> 1

    @always_comb
    def combine():
        if matrix1 == O_M:
            d0.next = d1
        elif matrix1 == UP_M and gate1:
            d0.next = gs
        else:
            d0.next = rq1

    return (
        insts,
        rounding,
        halve,
        stage,
        operand,
        index,
        silu_rom,
        gate_product,
        gate_round,
        gate_halve,
        combine,
    )


@block
def output_writer(
    clk,
    rst,
    clear,
    y_valid,
    y_row,
    y,
    job_gemv,
    job_matrix,
    job_row0,
    job_rows,
    job_entry,
    job_att,
    shifts,
    s_act,
    s_att,
    recip,
    recip_valid,
    cr_addr,
    cr_data,
    wr_en,
    wr_addr,
    wr_data,
    wr_mask,
    overrun,
    idle,
    L: ActLayout,
    LANES,
    ACC_BITS,
    PORT,
    A,
):
    """Drain the tile's outputs into the activation memory (see the module docstring)."""
    AB = L.addr_bits
    SW = ACC_BITS + len(recip) + 1  # an accumulator scaled by the softmax reciprocal
    RB = len(job_row0)
    S = L.stride
    OX, OQKV, OATT, OH, OGU, OD, OY = (L.offset(r) for r in ("x", "qkv", "att", "h", "gu", "d", "y"))
    MLP = L.mlp
    MASKS = tuple((1 << k) - 1 for k in range(PORT + 1))
    dr = unsigned_sig(LANES * ACC_BITS)
    left = unsigned_sig(bits_for(LANES))
    lcap = unsigned_sig(bits_for(PORT))
    nrem = unsigned_sig(RB)
    row = unsigned_sig(RB)
    matrix, entry = unsigned_sig(2), unsigned_sig(5)
    active, att, att1, run = (Signal(bool(0)) for _ in range(4))
    scale = signed_sig(len(recip) + 1)
    scaled = [unsigned_sig(SW) for _ in range(PORT)]
    shift = unsigned_sig(SHIFT_BITS)
    ebase, ebase1 = unsigned_sig(AB), unsigned_sig(AB)
    # stage 1
    v1, gate1 = Signal(bool(0)), Signal(bool(0))
    row1 = unsigned_sig(RB)
    matrix1, entry1 = unsigned_sig(2), unsigned_sig(5)
    mask0, mask1 = unsigned_sig(PORT), unsigned_sig(PORT)
    take = Signal(bool(0))
    addr0, addr1 = unsigned_sig(AB), unsigned_sig(AB)
    en0, en1 = Signal(bool(0)), Signal(bool(0))
    d0s = [signed_sig(WORD_BITS) for _ in range(PORT)]
    d1s = [signed_sig(WORD_BITS) for _ in range(PORT)]
    insts = []
    for j in range(PORT):
        insts.append(scale_lane(dr((j + 1) * ACC_BITS, j * ACC_BITS), scale, scaled[j], OW=SW))
        insts.append(
            writer_lane(
                clk,
                scaled[j],
                cr_data((j + 1) * WORD_BITS, j * WORD_BITS),
                shift,
                s_act,
                matrix1,
                gate1,
                d0s[j],
                d1s[j],
                ACC_BITS=SW,
                A=A,
            )
        )
    insts.append(two_write_ports(d0s, d1s, addr0, addr1, en0, en1, wr_data, wr_addr, wr_en))

    @always_comb
    def select():
        if att:
            scale.next = recip
        else:
            scale.next = 1
        if att:
            shift.next = s_att
        elif matrix == QKV_M:
            shift.next = shifts[SHIFT_BITS:0]
        elif matrix == O_M:
            shift.next = shifts[2 * SHIFT_BITS : SHIFT_BITS]
        elif matrix == UP_M:
            shift.next = shifts[3 * SHIFT_BITS : 2 * SHIFT_BITS]
        else:
            shift.next = shifts[4 * SHIFT_BITS : 3 * SHIFT_BITS]
        take.next = y_valid and (job_gemv or job_att)
        run.next = active and (recip_valid or not att)
        if y_row < job_rows:
            nrem.next = job_rows - y_row
        else:
            nrem.next = 0
        if left < PORT:
            lcap.next = left
        else:
            lcap.next = PORT
        ebase.next = entry * S
        ebase1.next = entry1 * S

    @always_comb
    def masks():
        mask0.next = MASKS[lcap]
        idle.next = not take and not active and not v1

    @always_comb
    def read_operand():
        if matrix == O_M:
            cr_addr.next = ebase + OX + row
        elif matrix == DOWN_M:
            cr_addr.next = ebase + OH + row
        elif row >= MLP:
            cr_addr.next = ebase + OGU + row - MLP
        else:
            cr_addr.next = 0

    @always_comb
    def write():
        wr_mask.next = mask1
        addr1.next = ebase1 + OY + row1
        if att1:
            addr0.next = ebase1 + OATT + row1
        elif matrix1 == QKV_M:
            addr0.next = ebase1 + OQKV + row1
        elif matrix1 == O_M:
            addr0.next = ebase1 + OH + row1
        elif matrix1 == UP_M:
            addr0.next = ebase1 + OGU + row1
        else:
            addr0.next = ebase1 + OD + row1
        en0.next = v1
        en1.next = v1 and matrix1 == DOWN_M

    @always_seq(clk.posedge, reset=rst)
    def drain():
        v1.next = run
        att1.next = att
        row1.next = row
        matrix1.next = matrix
        entry1.next = entry
        mask1.next = mask0
        gate1.next = row >= MLP
        if clear:
            overrun.next = 0
            active.next = 0
            left.next = 0
        elif take:
            if active and left > PORT:
                overrun.next = 1
            dr.next = y
            if nrem > LANES:
                left.next = LANES
            else:
                left.next = nrem
            row.next = job_row0 + y_row
            if job_att:
                matrix.next = QKV_M  # stored as it is, as q, k and v are
            else:
                matrix.next = job_matrix
            att.next = job_att
            entry.next = job_entry
            active.next = 1
        elif run:
            dr.next = dr >> (PORT * ACC_BITS)
            row.next = row + PORT
            if left <= PORT:
                active.next = 0
                left.next = 0
            else:
                left.next = left - PORT

    return insts, select, masks, read_operand, write, drain


# ---------------------------------------------------------------------------------------------------
# The replay-cache controller's data: cached MLP outputs in and out of the activation memory
# ---------------------------------------------------------------------------------------------------


@block
def replay_lane(clk, raw, h, d_out, y_out, CACHE_BITS, A):
    """One element of a read beat: the cached ``d`` (sign-extended, registered), and ``y = sat(h + d)``
    with ``h`` from the activation memory's registered read."""
    d0, d1, hs = (signed_sig(WORD_BITS) for _ in range(3))
    s = signed_sig(WORD_BITS + 1)
    insts = [saturate(s, y_out, A=A)]

    @always_comb
    def extend():
        d0.next = raw.signed()
        hs.next = h.signed()

    @always(clk.posedge)
    def stage():
        d1.next = d0

    @always_comb
    def add():
        s.next = d1 + hs
        d_out.next = d1

    return insts, extend, stage, add


@block
def replay_writer(
    clk,
    rst,
    rvalid,
    rdata,
    start,
    entry,
    rr_addr,
    rr_data,
    rw_en,
    rw_addr,
    rw_data,
    idle,
    L: ActLayout,
    EPB,
    CACHE_BITS,
    A,
):
    """A replay read's beats into the activation memory: each beat of ``EPB`` cached elements is written
    to the entry's ``d`` and, added to ``h`` (read in the beat's cycle), to its ``y``; two stages, as the
    output writer. ``start``/``entry``: a controller job begins (beats count from 0)."""
    AB = L.addr_bits
    S, OH, OD, OY = L.stride, L.offset("h"), L.offset("d"), L.offset("y")
    beats = -(-L.hidden // EPB)
    beat, beat1 = unsigned_sig(bits_for(beats)), unsigned_sig(bits_for(beats))
    ent, ent1 = unsigned_sig(5), unsigned_sig(5)
    v1 = Signal(bool(0))
    a0, a1 = unsigned_sig(AB), unsigned_sig(AB)
    en0 = Signal(bool(0))
    ds = [signed_sig(WORD_BITS) for _ in range(EPB)]
    ys = [signed_sig(WORD_BITS) for _ in range(EPB)]
    insts = [
        replay_lane(
            clk,
            rdata((j + 1) * CACHE_BITS, j * CACHE_BITS),
            rr_data((j + 1) * WORD_BITS, j * WORD_BITS),
            ds[j],
            ys[j],
            CACHE_BITS=CACHE_BITS,
            A=A,
        )
        for j in range(EPB)
    ]
    insts.append(two_write_ports(ds, ys, a0, a1, en0, en0, rw_data, rw_addr, rw_en))

    @always_comb
    def addresses():
        rr_addr.next = ent * S + OH + beat * EPB
        a0.next = ent1 * S + OD + beat1 * EPB
        a1.next = ent1 * S + OY + beat1 * EPB
        en0.next = v1
        idle.next = not rvalid and not v1

    @always_seq(clk.posedge, reset=rst)
    def count():
        v1.next = rvalid
        beat1.next = beat
        ent1.next = ent
        if start:
            ent.next = entry
            beat.next = 0
        elif rvalid:
            beat.next = beat + 1

    return insts, addresses, count


@block
def beats_ahead(clk, rst, start, entry, ent, rb, BEATS):
    """A reader's beat counter, one beat ahead of its unit: as the unit starts on ``entry`` beat 1 is read
    and ``rb`` = 2 is next; it stops at ``BEATS``, where the reader turns to the next entry's beat 0."""

    @always_seq(clk.posedge, reset=rst)
    def count():
        if start:
            ent.next = entry
            rb.next = 2
        elif rb < BEATS:
            rb.next = rb + 1

    return count


@block
def replay_reader(
    clk, rst, pre, first, start, entry, next_entry, rd_addr, rd_data, wdata, L: ActLayout, EPB, CACHE_BITS
):
    """A replay write's beats out of the activation memory: the controller samples beat b of ``wdata`` on
    the edge it addresses it, so each beat is read one cycle ahead: beat 0 of the first entry in the
    record's prefetch cycle (``pre``, entry ``first``), beat 1 as the controller starts (``start``,
    ``entry``), then one beat per cycle, and beat 0 of the next entry (``next_entry``) while it waits."""
    S, OD = L.stride, L.offset("d")
    beats = -(-L.hidden // EPB)
    rb = unsigned_sig(bits_for(beats + 1), beats)
    ent = unsigned_sig(5)
    lanes = [rd_data(j * WORD_BITS + CACHE_BITS, j * WORD_BITS) for j in range(EPB)]
    insts = [wire(ConcatSignal(*reversed(lanes)) if EPB > 1 else lanes[0], wdata)]

    @always_comb
    def address():
        if pre:
            rd_addr.next = first * S + OD
        elif start:
            rd_addr.next = entry * S + OD + EPB
        elif rb < beats:
            rd_addr.next = ent * S + OD + rb * EPB
        else:
            rd_addr.next = next_entry * S + OD

    return insts, address, beats_ahead(clk, rst, start, entry, ent, rb, BEATS=beats)


@block
def tas_reader(
    clk,
    rst,
    pre,
    first,
    start,
    entry,
    next_entry,
    q_addr,
    k_addr,
    L: ActLayout,
    HEADS,
    HEAD_DIM,
    KV_HEADS,
    LANES,
):
    """The TAS unit's beats: the unit samples beat j of an entry in the j-th cycle of its job, so each beat
    is read one cycle ahead, as ``replay_reader`` reads a replay write's: beat 0 of the first entry in the
    record's prefetch cycle (``pre``), beat 1 as the unit starts, then one per cycle, and beat 0 of the next
    entry while it waits. Beat j holds ``LANES`` elements of head h = j // (HEAD_DIM / LANES): the query's
    at ``q_addr`` in the activation memory, and the aligned key's at element ``k_addr`` of the TAS key
    buffer (per entry ``KV_HEADS * HEAD_DIM`` elements; head h reads key/value head h // (HEADS / KV_HEADS))."""
    S, OQKV = L.stride, L.offset("qkv")
    BPH = HEAD_DIM // LANES  # beats per head
    N = HEADS * BPH
    G = HEADS // KV_HEADS
    KV = KV_HEADS * HEAD_DIM
    rb = unsigned_sig(bits_for(N + 1), N)
    ent, e_sel = unsigned_sig(5), unsigned_sig(5)
    beat = unsigned_sig(bits_for(N + 1))

    @always_comb
    def select():
        if pre:
            e_sel.next = first
            beat.next = 0
        elif start:
            e_sel.next = entry
            beat.next = 1
        elif rb < N:
            e_sel.next = ent
            beat.next = rb
        else:
            e_sel.next = next_entry
            beat.next = 0

    @always_comb
    def address():
        q_addr.next = e_sel * S + OQKV + beat * LANES
        k_addr.next = e_sel * KV + (beat // BPH // G) * HEAD_DIM + (beat % BPH) * LANES

    return select, address, beats_ahead(clk, rst, start, entry, ent, rb, BEATS=N)


@dataclass(frozen=True)
class WriterParams:
    """An output writer for synthesis: a core of ``lanes`` lanes on the paper's model (VILA-U 7B)."""

    lanes: int = 512
    port: int = 1
    acc_bits: int = 37  #: pe_lane.accumulator_bits(4, 16, 11008) at int4 weights
    act_bits: int = 16
    hidden: int = 4096
    q_dim: int = 4096
    kv_dim: int = 4096
    mlp: int = 11008
    entries: int = 10

    def layout(self) -> ActLayout:
        return ActLayout(self.hidden, self.q_dim, self.kv_dim, self.mlp, self.entries)

    def kwargs(self) -> dict:
        return {
            "L": self.layout(),
            "LANES": self.lanes,
            "ACC_BITS": self.acc_bits,
            "PORT": self.port,
            "A": self.act_bits,
        }


class WriterBench(Bench):
    """The output writer as a unit (conversion, synthesis); its checks run through ``rtl layer``."""

    name = "output_writer"

    def ports(self) -> dict:
        p = self.params
        ab, rows = p.layout().addr_bits, bits_for(2 * p.mlp + p.lanes)
        return {
            "rst": ResetSignal(0, active=1, isasync=False),
            "clear": Signal(bool(0)),
            "y_valid": Signal(bool(0)),
            "y_row": unsigned_sig(rows),
            "y": unsigned_sig(p.lanes * p.acc_bits),
            "job_gemv": Signal(bool(0)),
            "job_matrix": unsigned_sig(2),
            "job_row0": unsigned_sig(rows),
            "job_rows": unsigned_sig(rows),
            "job_entry": unsigned_sig(5),
            "job_att": Signal(bool(0)),
            "shifts": unsigned_sig(4 * SHIFT_BITS),
            "s_act": unsigned_sig(SHIFT_BITS),
            "s_att": unsigned_sig(SHIFT_BITS),
            "recip": unsigned_sig(QUOTIENT_BITS),
            "recip_valid": Signal(bool(0)),
            "cr_addr": unsigned_sig(ab),
            "cr_data": unsigned_sig(p.port * WORD_BITS),
            "wr_en": unsigned_sig(2),
            "wr_addr": unsigned_sig(2 * ab),
            "wr_data": unsigned_sig(2 * p.port * WORD_BITS),
            "wr_mask": unsigned_sig(p.port),
            "overrun": Signal(bool(0)),
            "idle": Signal(bool(0)),
        }

    def module(self):
        return output_writer
