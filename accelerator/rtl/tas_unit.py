"""TAS unit: fixed-point Temporal Attention Score and the replay bit, the timing of ``cost.tas_cycles``.

For one batch entry the query and the aligned key stream in ``LANES`` elements per beat, head after head
(each head zero-padded to a whole number of beats), ``HEADS * ceil(HEAD_DIM / LANES)`` beats back to back.

* edge j:          beat j sampled straight into the lane multipliers (product registers, one DSP each);
* edges j+1..j+D:  pipelined adder tree over the lanes, D = ``common.tree_levels(LANES)`` (the cost
  model's ``adder_tree_depth``, derived independently);
* edge j+D+1:      head accumulation (one accumulator summing every head's dot product);
* next edge:       mean over heads: an arithmetic shift when HEADS is a power of two, otherwise a multiply
  by a fixed-point reciprocal;
* next edge:       compare with tau (``>=``, or ``>`` when ``strict``), ``replay``, ``tas`` and ``done``.

Latency: beats + D + 3 = ``cost.tas_cycles`` (``TAS_TAIL_STAGES`` = accumulate, mean, compare).

Number format: q and k are two's complement with ``frac_bits`` fractional bits, so q.k carries
``2 * frac_bits``. The 1/sqrt(d_head) of the score is folded into the tau register (software writes
``tau_register(tau, ...)``), so the hardware compares ``mean_h(q_h . k_h)`` with ``tau * sqrt(d_head)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from myhdl import ConcatSignal, ResetSignal, Signal, always_comb, always_seq, block, intbv

from accelerator.cost import ceil_div, tas_cycles
from accelerator.rtl.common import (
    adder_tree,
    bits_for,
    flag_reg,
    mul_reg_bits,
    pack,
    signed_sig,
    to_signed,
    tree_levels,
    tree_width,
    unsigned_sig,
    wire,
)
from accelerator.rtl.harness import Bench, event_setup

#: Fractional bits of the fixed-point reciprocal used for the mean when HEADS is not a power of two.
RECIP_BITS = 24


@dataclass(frozen=True)
class TasParams:
    heads: int = 4
    head_dim: int = 16
    lanes: int = 4
    width: int = 16  #: bits of a q or k element
    frac_bits: int = 8  #: fractional bits of a q or k element (host-side format; not in the RTL)

    @property
    def beats(self) -> int:
        return self.heads * ceil_div(self.head_dim, self.lanes)

    @property
    def acc_bits(self) -> int:
        return 2 * self.width + bits_for(self.heads * self.head_dim) + 1

    def kwargs(self) -> dict:
        d = {k.upper(): v for k, v in asdict(self).items()}
        d.pop("FRAC_BITS")
        return d


@block
def tas_unit(
    clk, rst, start, q_in, k_in, tau, strict, busy, done, replay, tas, HEADS, HEAD_DIM, LANES, WIDTH
):
    """Score one entry per job; ``tas`` is mean_h(q_h . k_h) in the product format (2*frac bits)."""
    N = HEADS * ((HEAD_DIM + LANES - 1) // LANES)
    PW = 2 * WIDTH
    ACCW = 2 * WIDTH + bits_for(HEADS * HEAD_DIM) + 1
    POW2 = HEADS & (HEADS - 1) == 0
    SH = HEADS.bit_length() - 1
    RECIP = (1 << RECIP_BITS) // HEADS + 1
    LAST0 = int(N == 1)
    STREAM0 = int(N > 1)

    prods = [unsigned_sig(PW) for _ in range(LANES)]
    insts = [
        mul_reg_bits(clk, q_in((r + 1) * WIDTH, r * WIDTH), k_in((r + 1) * WIDTH, r * WIDTH), prods[r], PW=PW)
        for r in range(LANES)
    ]
    pbus = unsigned_sig(LANES * PW)
    insts.append(wire(ConcatSignal(*reversed(prods)), pbus) if LANES > 1 else wire(prods[0], pbus))
    tree_out = unsigned_sig(tree_width(LANES, PW))
    insts.append(adder_tree(clk, pbus, tree_out, COUNT=LANES, WIDTH=PW))

    # valid/first/last of the beat in the product registers, delayed through the tree
    f_v, f_f, f_l = (Signal(bool(0)) for _ in range(3))
    flags = unsigned_sig(3)
    insts.append(wire(ConcatSignal(f_v, f_f, f_l), flags))
    chain = [flags] + [unsigned_sig(3) for _ in range(tree_levels(LANES))]
    for k in range(len(chain) - 1):
        insts.append(flag_reg(clk, rst, chain[k], chain[k + 1]))
    ft = chain[-1]
    t_v, t_f, t_l = ft(2), ft(1), ft(0)

    cnt = unsigned_sig(bits_for(N) + 1)
    streaming = Signal(bool(0))
    acc = signed_sig(ACCW)
    acc_valid = Signal(bool(0))
    mean = signed_sig(ACCW)
    mean_valid = Signal(bool(0))
    tau_r = signed_sig(ACCW)
    strict_r = Signal(bool(0))

    @always_seq(clk.posedge, reset=rst)
    def control():
        if streaming:
            f_v.next = 1
            f_f.next = 0
            f_l.next = cnt == N - 1
            if cnt == N - 1:
                streaming.next = 0
            cnt.next = cnt + 1
        elif start and not busy:
            busy.next = 1
            tau_r.next = tau
            strict_r.next = strict
            f_v.next = 1
            f_f.next = 1
            f_l.next = LAST0
            streaming.next = STREAM0
            cnt.next = 1
        else:
            f_v.next = 0
        if mean_valid:
            busy.next = 0

    @always_seq(clk.posedge, reset=rst)
    def accumulate():
        acc_valid.next = t_v and t_l
        if t_v:
            if t_f:
                acc.next = tree_out.signed()
            else:
                acc.next = acc + tree_out.signed()

    if POW2:

        @always_seq(clk.posedge, reset=rst)
        def average():
            mean_valid.next = acc_valid
            if acc_valid:
                mean.next = acc >> SH

    else:
        recip = Signal(intbv(RECIP, min=0, max=1 << (RECIP_BITS + 1)))
        scaled = signed_sig(ACCW + RECIP_BITS + 2)

        @always_comb
        def reciprocal():
            scaled.next = acc * recip

        # HEADS >= 3 here, so RECIP < 2^(RECIP_BITS-1) and |acc x RECIP| / 2^RECIP_BITS < |acc|: the mean
        # fits ACCW bits, and the slice makes the (value-preserving) narrowing explicit.
        assert RECIP < 1 << (RECIP_BITS - 1)

        @always_seq(clk.posedge, reset=rst)
        def average():
            mean_valid.next = acc_valid
            if acc_valid:
                mean.next = scaled[ACCW + RECIP_BITS : RECIP_BITS].signed()

        insts.append(reciprocal)

    @always_seq(clk.posedge, reset=rst)
    def compare():
        done.next = mean_valid
        if mean_valid:
            tas.next = mean
            if strict_r:
                replay.next = mean > tau_r
            else:
                replay.next = mean >= tau_r

    return insts, control, accumulate, average, compare


# ---------------------------------------------------------------------------------------------------
# Fixed-point reference and host-side helpers
# ---------------------------------------------------------------------------------------------------


def quantize(x: np.ndarray, width: int, frac_bits: int) -> np.ndarray:
    """Round to ``frac_bits`` fractional bits and saturate to ``width``-bit two's complement."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * (1 << frac_bits)), lo, hi).astype(np.int64)


def tau_register(tau: float, head_dim: int, frac_bits: int, strict: bool) -> int:
    """The tau register value: tau * sqrt(d_head) in the product format, rounded so that the integer
    compare with mean_h(q.k) is exact (ceil for ``>=``, floor for ``>``)."""
    x = tau * math.sqrt(head_dim) * (1 << (2 * frac_bits))
    return math.floor(x) if strict else math.ceil(x)


def tas_fixed(q: np.ndarray, k: np.ndarray, tau_reg: int, strict: bool, heads: int) -> tuple[int, bool]:
    """Bit-exact model of the unit: (mean register, replay bit) for integer q, k of shape (heads, d)."""
    acc = int(np.sum(q.astype(object) * k.astype(object)))
    if heads & (heads - 1) == 0:
        mean = acc >> (heads.bit_length() - 1)
    else:
        mean = (acc * ((1 << RECIP_BITS) // heads + 1)) >> RECIP_BITS
    return mean, (mean > tau_reg) if strict else (mean >= tau_reg)


def tas_from_register(mean: int, head_dim: int, frac_bits: int) -> float:
    """The TAS value the unit computed, back in logit units."""
    return mean / (1 << (2 * frac_bits)) / math.sqrt(head_dim)


# ---------------------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TasJob:
    q: np.ndarray  #: (heads, head_dim) integers
    k: np.ndarray
    tau_reg: int
    strict: bool


class TasBench(Bench):
    """Jobs are batch entries scored back to back; the event view is ``TasUnit.submit(entries)``."""

    name = "tas_unit"

    def __init__(self, params: TasParams, jobs: list[TasJob]) -> None:
        super().__init__(params, jobs)
        self._out: list[tuple[int, bool]] = []
        self._beats: dict[int, list[tuple[int, int]]] = {}

    def ports(self) -> dict:
        p = self.params
        return {
            "rst": ResetSignal(0, active=1, isasync=False),
            "start": Signal(bool(0)),
            "q_in": unsigned_sig(p.lanes * p.width),
            "k_in": unsigned_sig(p.lanes * p.width),
            "tau": signed_sig(p.acc_bits),
            "strict": Signal(bool(0)),
            "busy": Signal(bool(0)),
            "done": Signal(bool(0)),
            "replay": Signal(bool(0)),
            "tas": signed_sig(p.acc_bits),
        }

    def module(self):
        return tas_unit

    def _stream(self, job: TasJob) -> list[tuple[int, int]]:
        key = id(job)
        if key not in self._beats:
            p = self.params
            chunks = ceil_div(p.head_dim, p.lanes)
            pad = chunks * p.lanes - p.head_dim
            qp = np.pad(job.q, ((0, 0), (0, pad)))
            kp = np.pad(job.k, ((0, 0), (0, pad)))
            self._beats[key] = [
                (
                    pack(qp[h, c * p.lanes : (c + 1) * p.lanes], p.width),
                    pack(kp[h, c * p.lanes : (c + 1) * p.lanes], p.width),
                )
                for h in range(p.heads)
                for c in range(chunks)
            ]
        return self._beats[key]

    def load(self, ports: dict, job: TasJob) -> None:
        ports["tau"].next = job.tau_reg
        ports["strict"].next = bool(job.strict)
        self.beat(ports, job, 0)

    def beat(self, ports: dict, job: TasJob, j: int) -> None:
        beats = self._stream(job)
        q, k = beats[j] if j < len(beats) else (0, 0)
        ports["q_in"].next = q
        ports["k_in"].next = k

    def observe(self, ports: dict, index: int) -> None:
        if ports["done"]:
            self._out.append((to_signed(int(ports["tas"].val), self.params.acc_bits), bool(ports["replay"])))

    def outputs(self) -> list[tuple[int, bool]]:
        return self._out

    def reference(self) -> list[tuple[int, bool]]:
        return [tas_fixed(j.q, j.k, j.tau_reg, j.strict, self.params.heads) for j in self.jobs]

    def cost_cycles(self) -> list[int]:
        p = self.params
        return [int(tas_cycles(p.heads, p.head_dim, p.lanes))] * len(self.jobs)

    def event_cycles(self) -> int:
        from accelerator.tas_unit import TasUnit

        p = self.params
        env, cost, memory, timeline = event_setup(
            {"tas_lanes": p.lanes}, {"heads": p.heads, "head_dim": p.head_dim, "hidden": p.heads * p.head_dim}
        )
        end = TasUnit(env, cost, memory, timeline).submit(len(self.jobs), 0.0)
        # the unit alone: the instruction's read of its first query beat is not in this bench
        return int(round(end - (cost.instruction("TAS").fixed_cycles if self.jobs else 0)))


def tas_case(rng: np.random.Generator) -> TasBench:
    """Random shape, lanes, width and entries; tau placed at, just above and just below the score so
    both compare modes and the tie are exercised."""
    heads = int(rng.choice([1, 2, 3, 4, 5, 8]))
    head_dim = int(rng.integers(1, 25))
    p = TasParams(
        heads=heads, head_dim=head_dim, lanes=int(rng.integers(1, 17)), width=int(rng.choice([6, 8, 12, 16]))
    )
    lo, hi = -(1 << (p.width - 1)), 1 << (p.width - 1)
    jobs = []
    for _ in range(int(rng.integers(1, 5))):
        q = rng.integers(lo, hi, size=(heads, head_dim))
        k = rng.integers(lo, hi, size=(heads, head_dim))
        strict = bool(rng.integers(0, 2))
        mean, _ = tas_fixed(q, k, 0, strict, heads)
        limit = (1 << (p.acc_bits - 1)) - 1
        tau_reg = int(np.clip(mean + int(rng.integers(-2, 3)), -limit, limit))
        jobs.append(TasJob(q, k, tau_reg, strict))
    return TasBench(p, jobs)
