"""Shared RTL building blocks and the job-timing convention every twin follows.

Timing convention (the one the cost-model primitives count): a job's latency is the number of rising clock
edges from the edge that samples ``start`` (counted as 1) through the edge that registers ``done``
(inclusive). A unit accepts its next ``start`` on the edge right after ``done``, so jobs issued back to
back take exactly ``n * latency`` edges, as the FIFO units of the event model assume.

All outputs are registered (no combinational path from an input to an output), which is what lets the
converted Verilog be co-simulated against MyHDL through the VPI without delta-cycle races.
"""

from __future__ import annotations

from myhdl import ConcatSignal, Signal, always, always_comb, always_seq, block, delay, intbv


def signed_sig(bits: int, value: int = 0) -> Signal:
    """A signed signal of ``bits`` bits (two's complement)."""
    return Signal(intbv(value, min=-(1 << (bits - 1)), max=1 << (bits - 1)))


def unsigned_sig(bits: int, value: int = 0) -> Signal:
    return Signal(intbv(value)[max(1, bits) :])


@block
def mul_reg(clk, a, b, p):
    """Signed multiply with the product registered (a DSP48E2 with PREG): one lane of a MAC array.

    ``a`` and ``b`` arrive as unsigned shadow slices of a flat bus; converting them here keeps the
    per-lane slicing legal in Verilog (a loop-variable slice is not).
    """

    @always(clk.posedge)
    def logic():
        p.next = a.signed() * b.signed()

    return logic


@block
def add_reg(clk, a, b, s):
    """One node of a pipelined adder tree: sum of two signed slices, registered."""

    @always(clk.posedge)
    def logic():
        s.next = a.signed() + b.signed()

    return logic


@block
def pass_reg(clk, a, s):
    """An odd node of an adder tree level: delay by one register so all paths have equal depth."""

    @always(clk.posedge)
    def logic():
        s.next = a.signed()

    return logic


@block
def mul_reg_bits(clk, a, b, p, PW):
    """:func:`mul_reg` whose product leaves as raw bits, so lanes concatenate into a bus (VHDL too)."""
    ps = signed_sig(PW)

    @always(clk.posedge)
    def logic():
        ps.next = a.signed() * b.signed()

    @always_comb
    def bits():
        p.next = ps[PW:]

    return logic, bits


@block
def add_reg_bits(clk, a, b, s, SW):
    """:func:`add_reg` with the sum as raw bits (an adder-tree node)."""
    ss = signed_sig(SW)

    @always(clk.posedge)
    def logic():
        ss.next = a.signed() + b.signed()

    @always_comb
    def bits():
        s.next = ss[SW:]

    return logic, bits


@block
def pass_reg_bits(clk, a, s, SW):
    """:func:`pass_reg` with the (sign-extended) value as raw bits."""
    ss = signed_sig(SW)

    @always(clk.posedge)
    def logic():
        ss.next = a.signed()

    @always_comb
    def bits():
        s.next = ss[SW:]

    return logic, bits


def tree_levels(count: int) -> int:
    """Register levels :func:`adder_tree` builds over ``count`` operands: it pairs them level by level
    until one is left. Counted from that construction, not taken from the cost model, so the cycle
    cross-check compares two independent derivations."""
    levels = 0
    while count > 1:
        count, levels = (count + 1) // 2, levels + 1
    return levels


def tree_width(count: int, width: int) -> int:
    """Width of the sum out of :func:`adder_tree` (one bit per level)."""
    return width + tree_levels(count)


@block
def adder_tree(clk, bus, total, COUNT, WIDTH):
    """A pipelined binary adder tree over ``COUNT`` signed ``WIDTH``-bit fields of ``bus``.

    One register level per tree level (:func:`tree_levels` of them); ``total`` carries the
    sum as raw bits, ``tree_width(COUNT, WIDTH)`` wide. Odd nodes are delayed so all paths are equal.
    """
    insts: list = []
    level, n, w = bus, COUNT, WIDTH
    while n > 1:
        outs = [unsigned_sig(w + 1) for _ in range((n + 1) // 2)]
        for i in range(n // 2):
            a = level((2 * i + 1) * w, 2 * i * w)
            b = level((2 * i + 2) * w, (2 * i + 1) * w)
            insts.append(add_reg_bits(clk, a, b, outs[i], SW=w + 1))
        if n % 2:
            insts.append(pass_reg_bits(clk, level(n * w, (n - 1) * w), outs[-1], SW=w + 1))
        if len(outs) > 1:
            bus_next = unsigned_sig(len(outs) * (w + 1))
            insts.append(wire(ConcatSignal(*reversed(outs)), bus_next))
            level = bus_next
        else:
            level = outs[0]
        n, w = len(outs), w + 1
    last = level

    @always_comb
    def out():
        total.next = last

    return insts, out


@block
def wire(a, s):
    """Copy a signal (e.g. a ConcatSignal) into a plain one: MyHDL cannot name a slice of a ConcatSignal."""

    @always_comb
    def logic():
        s.next = a

    return logic


@block
def flag_reg(clk, rst, a, s):
    """A pipeline register of control flags (valid, first, last, end), cleared by reset so that a
    one-edge reset leaves no stale flag in flight (data registers beside it need none)."""

    @always_seq(clk.posedge, reset=rst)
    def logic():
        s.next = a

    return logic


@block
def clock_source(clk, half_period: int = 5):
    """A free-running clock for a MyHDL testbench."""

    @always(delay(half_period))
    def toggle():
        clk.next = not clk

    return toggle


@block
def delay_reg(clk, a, s):
    """A plain pipeline register (used for optional extra stages)."""

    @always(clk.posedge)
    def logic():
        s.next = a

    return logic


def bits_for(n: int) -> int:
    """Bits to hold the unsigned value ``n``."""
    return max(1, int(n).bit_length())


def to_unsigned(value: int, bits: int) -> int:
    return value & ((1 << bits) - 1)


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def pack(values, bits: int) -> int:
    """Pack a sequence of (possibly negative) ints into a flat bus, element 0 in the low bits."""
    out = 0
    for i, v in enumerate(values):
        out |= to_unsigned(int(v), bits) << (i * bits)
    return out


def unpack(bus: int, bits: int, count: int, signed: bool = True) -> list[int]:
    conv = to_signed if signed else to_unsigned
    return [conv(int(bus) >> (i * bits), bits) for i in range(count)]
