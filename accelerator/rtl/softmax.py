"""Softmax unit: what lies between an attention head's scores and its values on a core's tile.

An ATTN head runs two tile jobs back to back (``top.core_engine``): the scores (lanes own keys, the head's
query broadcast) and the values (lanes own the head's output dimensions, the softmax weights broadcast).
This unit sits beside the tile and does the rest of ``layer_numerics.attention``:

* **Scores in.** Each pass of the scores job (``lanes`` keys) is written, in the cycle the tile emits it,
  into one row of the score memory (one bank per lane, so a whole pass is one write), and a comparator
  tree folds the pass's valid lanes into the running maximum ``m``.
* **Weights out.** During the values job the tile reads its broadcast input here instead of from the
  activation memory: for column c, ``p = EXP[min((m - s_c) >> s_score, 255)]``, registered as a memory's
  read would be. The job reads the keys in order, once (one tile pass: ``head_dim <= lanes``), so the unit
  holds the current row of the score memory in a shift register and moves one lane per key, loading the
  next row after the last lane. Nothing is written back: the weights exist only on their way into the
  tile.
* **Reciprocal.** The p of the keys are summed as the values job reads them; one cycle after the last,
  a restoring divider starts on ``floor(2^40 / sum)``, one quotient bit per cycle, and raises
  ``recip_valid``. The output writer scales the values' accumulators by it (``datapath.output_writer``).

Timing (``cost.attention_entry_cycles`` counts it): the values job can start in the cycle the scores job
ends; the reciprocal is valid ``keys + RECIP_CYCLES`` cycles after the values job starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from myhdl import ConcatSignal, ResetSignal, Signal, always, always_comb, always_seq, block

from accelerator.rtl.common import bits_for, signed_sig, unsigned_sig, wire
from accelerator.rtl.harness import Bench
from accelerator.rtl.layer_numerics import ATT_RECIP_BITS, EXP, EXP_BITS

#: Quotient bits of floor(2^40 / sum): the sum holds the largest score's p = EXP[0] = 2^15 - 1, so the
#: quotient is below 2^26.
QUOTIENT_BITS = ATT_RECIP_BITS - EXP_BITS + 1
#: The divider loads one cycle after the last p is summed, then takes one cycle per quotient bit.
RECIP_CYCLES = 1 + QUOTIENT_BITS


@block
def max_leaf(raw, nvalid, v, ok, R):
    """Lane ``R`` of a pass: its score, valid while the pass still has keys at this lane."""

    @always_comb
    def leaf():
        v.next = raw.signed()
        ok.next = nvalid > R

    return leaf


@block
def max_node(a, av, b, bv, o, ov):
    @always_comb
    def pick():
        if av and (not bv or a >= b):
            o.next = a
        else:
            o.next = b
        ov.next = av or bv

    return pick


@block
def max_tree(values, valids, top, top_ok, SB):
    """Comparator tree over (score, valid) pairs: ``top`` is the largest valid score (``top_ok``: any)."""
    insts = []
    while len(values) > 1:
        nv, nok = [], []
        for i in range(0, len(values) - 1, 2):
            o, ov = signed_sig(SB), Signal(bool(0))
            insts.append(max_node(values[i], valids[i], values[i + 1], valids[i + 1], o, ov))
            nv.append(o)
            nok.append(ov)
        if len(values) % 2:
            nv.append(values[-1])
            nok.append(valids[-1])
        values, valids = nv, nok
    insts += [wire(values[0], top), wire(valids[0], top_ok)]
    return insts


@block
def softmax_unit(
    clk,
    rst,
    y_valid,
    y_row,
    y,
    scores,
    v_start,
    keys,
    s_score,
    x_col,
    p_out,
    recip,
    recip_valid,
    LANES,
    ACC_BITS,
    SB,
    MAX_KEYS,
):
    """``scores``: the tile's running job is a head's scores; ``v_start``: a values job starts (this
    cycle); ``x_col``: the column the tile reads (``p_out`` is its p one edge later). ``SB``: bits of one
    score (``pe_lane.accumulator_bits`` of the scores job); ``MAX_KEYS``: the largest ``keys``."""
    PASSES = -(-MAX_KEYS // LANES)
    KB = bits_for(MAX_KEYS)
    SUM_BITS = EXP_BITS + KB
    R0 = 1 << (ATT_RECIP_BITS - QUOTIENT_BITS)  # 2^14 < any sum: the quotient's higher bits are 0
    mem = [unsigned_sig(LANES * SB) for _ in range(PASSES)]
    raws = [y(r * ACC_BITS + SB, r * ACC_BITS) for r in range(LANES)]
    row_in = unsigned_sig(LANES * SB)
    nvalid = unsigned_sig(len(keys) + 1)
    vals = [signed_sig(SB) for _ in range(LANES)]
    oks = [Signal(bool(0)) for _ in range(LANES)]
    insts = [max_leaf(raws[r], nvalid, vals[r], oks[r], R=r) for r in range(LANES)]
    pass_max, any_valid = signed_sig(SB), Signal(bool(0))
    insts.append(max_tree(vals, oks, pass_max, any_valid, SB=SB))
    insts.append(wire(ConcatSignal(*reversed(raws)) if LANES > 1 else raws[0], row_in))
    m = signed_sig(SB)
    w_pass, r_pass = unsigned_sig(bits_for(PASSES)), unsigned_sig(bits_for(PASSES))
    next_pass = unsigned_sig(bits_for(PASSES + 1))
    lane = unsigned_sig(bits_for(LANES))
    word, row = unsigned_sig(LANES * SB), unsigned_sig(LANES * SB)
    reading = Signal(bool(0))
    s_c = signed_sig(SB)
    diff = signed_sig(SB + 2)
    idx = unsigned_sig(8)
    e = unsigned_sig(EXP_BITS)
    counting, dividing = Signal(bool(0)), Signal(bool(0))
    count = unsigned_sig(KB)
    total = unsigned_sig(SUM_BITS)
    divisor = unsigned_sig(SUM_BITS)
    rem = unsigned_sig(SUM_BITS + 1)
    rem2 = unsigned_sig(SUM_BITS + 2)
    quot = unsigned_sig(QUOTIENT_BITS)
    steps = unsigned_sig(bits_for(QUOTIENT_BITS))

    @always_comb
    def index():
        if keys > y_row:
            nvalid.next = keys - y_row
        else:
            nvalid.next = 0
        if y_row < PASSES * LANES:
            w_pass.next = y_row // LANES
        else:
            w_pass.next = 0
        if v_start or next_pass >= PASSES:
            r_pass.next = 0
        else:
            r_pass.next = next_pass
        reading.next = counting and count < keys and x_col == count

    @always_comb
    def read_row():
        word.next = mem[r_pass]

    low = row(SB, 0)

    @always_comb
    def weight():
        s_c.next = low.signed()

    @always_comb
    def distance():
        diff.next = m - s_c

    @always_comb
    def table_index():
        if diff < 0:
            idx.next = 0
        elif (diff >> s_score) > 255:
            idx.next = 255
        else:
            idx.next = diff >> s_score

    @always_comb
    def table():
        e.next = EXP[idx]

    @always_comb
    def divide_step():
        rem2.next = rem << 1

    @always_comb
    def out():
        recip.next = quot

    @always(clk.posedge)
    def store():
        if y_valid and scores:
            mem[w_pass].next = row_in

    @always_seq(clk.posedge, reset=rst)
    def state():
        p_out.next = e
        if y_valid and scores and any_valid and (y_row == 0 or pass_max > m):
            m.next = pass_max
        # the row of the key being read, lane 0 first: the values job reads the keys in order, once
        if v_start:
            if y_valid and scores and w_pass == 0:  # the scores' only pass is being written now
                row.next = row_in
            else:
                row.next = word
            lane.next = 0
            next_pass.next = 1
        elif reading:
            if lane == LANES - 1:
                row.next = word
                lane.next = 0
                next_pass.next = next_pass + 1
            else:
                row.next = row >> SB
                lane.next = lane + 1
        if v_start:
            counting.next = 1
            count.next = 0
            total.next = 0
            recip_valid.next = 0
            dividing.next = 0
        elif counting:
            if count == keys:
                counting.next = 0
                dividing.next = 1
                divisor.next = total
                rem.next = R0
                quot.next = 0
                steps.next = QUOTIENT_BITS
            elif reading:
                total.next = total + e
                count.next = count + 1
        elif dividing:
            if rem2 >= divisor:
                rem.next = rem2 - divisor
                quot.next = (quot << 1) | 1
            else:
                rem.next = rem2
                quot.next = quot << 1
            steps.next = steps - 1
            if steps == 1:
                dividing.next = 0
                recip_valid.next = 1

    return (
        insts,
        index,
        read_row,
        weight,
        distance,
        table_index,
        table,
        divide_step,
        out,
        store,
        state,
    )


@dataclass(frozen=True)
class SoftmaxParams:
    """A softmax unit for synthesis: a core of ``lanes`` lanes on the paper's model (VILA-U 7B: 2,064 keys
    at the longest context, scores of int4 keys x 16-bit queries over 128 dims)."""

    lanes: int = 512
    acc_bits: int = 37  #: the tile's accumulator (pe_lane.accumulator_bits(4, 16, 11008))
    score_bits: int = 27  #: pe_lane.accumulator_bits(4, 16, 128)
    max_keys: int = 2064

    def kwargs(self) -> dict:
        return {
            "LANES": self.lanes,
            "ACC_BITS": self.acc_bits,
            "SB": self.score_bits,
            "MAX_KEYS": self.max_keys,
        }


class SoftmaxBench(Bench):
    """The softmax unit as a unit (conversion, synthesis); ``tests/rtl/test_softmax.py`` checks it."""

    name = "softmax_unit"

    def ports(self) -> dict:
        p = self.params
        kb = bits_for(p.max_keys)
        return {
            "rst": ResetSignal(0, active=1, isasync=False),
            "y_valid": Signal(bool(0)),
            "y_row": unsigned_sig(kb + 1),
            "y": unsigned_sig(p.lanes * p.acc_bits),
            "scores": Signal(bool(0)),
            "v_start": Signal(bool(0)),
            "keys": unsigned_sig(kb),
            "s_score": unsigned_sig(6),
            "x_col": unsigned_sig(kb),
            "p_out": unsigned_sig(EXP_BITS),
            "recip": unsigned_sig(QUOTIENT_BITS),
            "recip_valid": Signal(bool(0)),
        }

    def module(self):
        return softmax_unit
