"""The softmax unit alone, against ``layer_numerics``' definition and the cost model's reciprocal latency.

Scores enter as the tile emits them (one pass of ``lanes`` keys per ``y_valid``), a values job then reads
every key's weight one column per cycle, and the reciprocal of their sum must be ``floor(2^40 / sum)``,
ready ``keys + cost.SOFTMAX_RECIP_CYCLES`` cycles after the values job starts: the cost model states that
number on its own (27), the RTL's comes from its divider. "Ready at t" means usable from cycle t + 1, as a
tile's outputs emitted at the end of its job are taken by the writer in the next cycle, so the cost model
compares the two ends with ``max(values, keys + 27)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from myhdl import ResetSignal, Signal, Simulation, StopSimulation, instance

from accelerator.cost import SOFTMAX_RECIP_CYCLES
from accelerator.rtl.common import bits_for, clock_source, unsigned_sig
from accelerator.rtl.layer_numerics import ATT_RECIP_BITS, EXP
from accelerator.rtl.pe_lane import accumulator_bits
from accelerator.rtl.softmax import softmax_unit


def run_unit(
    scores: np.ndarray, lanes: int, acc_bits: int, sb: int, s_score: int, max_keys: int, at_once: bool = False
):
    """Drive one head through the unit; returns the p per key, the reciprocal, and the first cycle
    ``recip_valid`` is high (cycle 0: the values job's start). ``at_once``: the values job starts in the
    cycle the scores' last pass is emitted, as the core engine starts it."""
    keys = len(scores)
    clk = Signal(bool(0))
    rst = ResetSignal(0, active=1, isasync=False)
    y_valid, scoring, v_start, recip_valid = (Signal(bool(0)) for _ in range(4))
    y_row = unsigned_sig(bits_for(max_keys + lanes))
    y = unsigned_sig(lanes * acc_bits)
    k = unsigned_sig(bits_for(max_keys))
    s_sh = unsigned_sig(6)
    x_col = unsigned_sig(bits_for(max_keys))
    p_out = unsigned_sig(15)
    recip = unsigned_sig(ATT_RECIP_BITS - 15 + 1)
    dut = softmax_unit(
        clk,
        rst,
        y_valid,
        y_row,
        y,
        scoring,
        v_start,
        k,
        s_sh,
        x_col,
        p_out,
        recip,
        recip_valid,
        LANES=lanes,
        ACC_BITS=acc_bits,
        SB=sb,
        MAX_KEYS=max_keys,
    )
    got = {"p": [], "recip": None, "cycles": None}

    @instance
    def bench():
        k.next = keys
        s_sh.next = s_score
        scoring.next = 1
        yield clk.posedge
        rows = list(range(0, keys, lanes))
        for row in rows:
            word = 0
            for r in range(lanes):  # lanes beyond the keys hold junk the tree must ignore
                v = int(scores[row + r]) if row + r < keys else (1 << (sb - 2)) - 1
                word |= (v & ((1 << acc_bits) - 1)) << (r * acc_bits)
            y.next = word
            y_row.next = row
            y_valid.next = 1
            if at_once and row == rows[-1]:
                break
            yield clk.posedge
            y_valid.next = 0
            for _ in range(3):
                yield clk.posedge
        v_start.next = 1
        yield clk.posedge  # edge of the values job's start cycle (cycle 0)
        v_start.next = 0
        y_valid.next = 0
        scoring.next = 0
        for t in range(1, keys + 64):
            if t - 1 < keys:
                x_col.next = t - 1  # the tile addresses column c in cycle c + 1
            yield clk.posedge
            if 2 <= t <= keys + 1 and len(got["p"]) < keys:
                got["p"].append(int(p_out.val))  # column t - 2's weight, registered
            if recip_valid and got["recip"] is None:
                got["recip"] = int(recip.val)
                got["cycles"] = t  # the values read here are those of cycle t
                raise StopSimulation
        raise StopSimulation

    Simulation(dut, clock_source(clk), bench).run(quiet=True)
    return got


def expected(scores: np.ndarray, s_score: int):
    p = np.asarray(EXP)[np.minimum((scores.max() - scores) >> s_score, 255)]
    return p, (1 << ATT_RECIP_BITS) // int(p.sum())


@pytest.mark.parametrize(
    "lanes, keys, spread, at_once",
    [
        (4, 10, 12, False),  # three passes, the last with two valid lanes
        (4, 10, 12, True),  # the values start as the last pass is stored
        (8, 6, 12, True),  # ... and that pass is the only one (the row bypasses the memory)
        (4, 1, 12, False),  # one key: the smallest sum, 2^15 - 1
        (3, 7, 6, False),  # lanes not a power of two
        (8, 16, 4, False),  # scores in a narrow range: every weight near the top of the table
        (1, 5, 8, True),  # one lane: a row per key
    ],
)
def test_weights_and_reciprocal_match_the_definition(lanes, keys, spread, at_once):
    rng = np.random.default_rng(keys * 31 + lanes)
    sb, s_score = 14, 3
    scores = rng.integers(-(1 << spread), 1 << spread, size=keys)
    got = run_unit(scores, lanes, acc_bits=20, sb=sb, s_score=s_score, max_keys=16, at_once=at_once)
    p, recip = expected(scores, s_score)
    assert got["p"] == [int(v) for v in p]
    assert got["recip"] == recip
    assert got["cycles"] == keys + SOFTMAX_RECIP_CYCLES + 1


def test_paper_size_head():
    """A head at the paper's size: 512 lanes, 2,064 keys (the longest context), scores of the scores job's
    width (int4 keys x 16-bit queries over 128 dims) and the shift ``Numerics.for_job`` gives there."""
    lanes, keys, hd = 512, 2064, 128
    sb = accumulator_bits(4, 16, hd)
    rng = np.random.default_rng(7)
    q = rng.normal(0, 2**11, size=hd).round().astype(np.int64)
    kmat = rng.integers(-7, 8, size=(keys, hd))
    scores = kmat @ q
    got = run_unit(scores, lanes, acc_bits=sb + 3, sb=sb, s_score=13, max_keys=keys)
    p, recip = expected(scores, 13)
    assert got["p"] == [int(v) for v in p]
    assert got["recip"] == recip
    assert got["cycles"] == keys + SOFTMAX_RECIP_CYCLES + 1
