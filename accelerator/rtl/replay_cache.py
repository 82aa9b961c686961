"""Replay-cache controller: ring-buffer addressing of the previous frame's MLP outputs, read on replay,
written after compute or replay; the timing of ``cost.replay_transfer_cycles``.

The cache holds one frame of positions per layer (``accelerator.replay_cache.cache_address``): position i
of frame t reads what position i of frame t-1 wrote and then overwrites it. One cached output of
``WORDS`` x ``WORD_BITS`` bits moves through a ``PORT_BITS`` port in ``BEATS = ceil(WORDS*WORD_BITS /
PORT_BITS)`` beats. Per beat b:

* edge b:   address generation -- beat 0's address ``BASE + (layer * TPF + position) * BEATS`` from the
  command, later beats +1; a write also registers its data beat, sampled from ``wdata`` at this edge;
* edge b+1: the cache memory port (synchronous SRAM / memory-controller port) reads or writes;
* edge b+2: the read-data register (``rdata``/``rvalid``); for a write, the write acknowledge.

Latency: BEATS + 2 = ``cost.replay_transfer_cycles`` (``REPLAY_LATENCY_CYCLES`` = address generation +
read-data register). Reads and writes take the same time, so a job stream of r reads and w writes takes
``(r + w)`` transfers, as ``CostModel.replay`` charges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from myhdl import ResetSignal, Signal, always, always_comb, always_seq, block, intbv

from accelerator.cost import ceil_div, replay_transfer_cycles
from accelerator.replay_cache import ReplayCacheModel, cache_address
from accelerator.rtl.common import bits_for, pack, unsigned_sig
from accelerator.rtl.harness import Bench, event_setup


@dataclass(frozen=True)
class ReplayParams:
    layers: int = 4
    tokens_per_frame: int = 16
    words: int = 64  #: elements of one cached MLP output (the hidden size)
    word_bits: int = 16  #: HardwareSpec.precision.replay_cache_bits
    port_bits: int = 512  #: HardwareSpec.replay_port_bits
    addr_bits: int = 32
    base: int = 0

    @property
    def beats(self) -> int:
        return int(ceil_div(self.words * self.word_bits, self.port_bits))

    def kwargs(self) -> dict:
        d = {k.upper(): v for k, v in asdict(self).items()}
        d["TPF"] = d.pop("TOKENS_PER_FRAME")
        return d


@block
def replay_cache_ctrl(
    clk,
    rst,
    start,
    op_write,
    layer,
    position,
    wdata,
    busy,
    done,
    rvalid,
    rdata,
    mem_addr,
    mem_we,
    mem_wdata,
    mem_rdata,
    LAYERS,
    TPF,
    WORDS,
    WORD_BITS,
    PORT_BITS,
    ADDR_BITS,
    BASE,
    err=None,
):
    """One transfer per job: read (``op_write`` = 0) or write one cached output of (layer, position).

    Input guard: a ``start`` with ``layer`` >= LAYERS or ``position`` >= TPF (possible when they are not
    powers of two, or when the ports are driven wider) is refused: no beat is addressed or written, and
    the sampling edge registers ``done`` and ``err`` together (a one-edge job). ``err`` is 0 with the
    ``done`` of every accepted transfer; it may be left out.
    """
    if err is None:
        err = Signal(bool(0))
    BEATS = (WORDS * WORD_BITS + PORT_BITS - 1) // PORT_BITS
    top = BASE + LAYERS * TPF * BEATS - 1
    if top >= 1 << ADDR_BITS:
        raise ValueError(f"the cache's last beat address {top} does not fit ADDR_BITS={ADDR_BITS}")
    bad = Signal(bool(0))
    LAYER_CHECK = (1 << len(layer)) > LAYERS
    POS_CHECK = (1 << len(position)) > TPF
    last0 = int(BEATS == 1)
    beat = Signal(intbv(0)[bits_for(BEATS) + 1 :])
    active = Signal(bool(0))
    wr = Signal(bool(0))
    v1, l1, v2, l2, w2 = (Signal(bool(0)) for _ in range(5))

    # Only the comparisons that can be true are built (a constant one is a lint warning).
    if LAYER_CHECK and POS_CHECK:

        @always_comb
        def guard():
            bad.next = layer >= LAYERS or position >= TPF

    elif LAYER_CHECK:

        @always_comb
        def guard():
            bad.next = layer >= LAYERS

    elif POS_CHECK:

        @always_comb
        def guard():
            bad.next = position >= TPF

    else:
        guard = []

    @always_seq(clk.posedge, reset=rst)
    def address():
        if active:
            mem_addr.next = mem_addr + 1
            mem_wdata.next = wdata
            mem_we.next = wr
            v1.next = 1
            l1.next = beat == BEATS - 1
            if beat == BEATS - 1:
                active.next = 0
            beat.next = beat + 1
        elif start and not busy and not bad:
            busy.next = 1
            mem_addr.next = (layer * TPF + position) * BEATS + BASE
            mem_wdata.next = wdata
            mem_we.next = op_write
            wr.next = op_write
            v1.next = 1
            l1.next = last0
            active.next = not last0
            beat.next = 1
        else:
            mem_we.next = 0
            v1.next = 0
            l1.next = 0
        if v2 and l2:
            busy.next = 0

    @always_seq(clk.posedge, reset=rst)
    def port_stage():
        v2.next = v1
        l2.next = l1
        w2.next = mem_we

    @always_seq(clk.posedge, reset=rst)
    def data_out():
        rvalid.next = v2 and not w2
        done.next = (v2 and l2) or (start and not busy and bad)
        err.next = start and not busy and bad
        if v2 and not w2:
            rdata.next = mem_rdata

    return guard, address, port_stage, data_out


# ---------------------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOp:
    write: bool
    layer: int
    position: int
    data: np.ndarray | None = None  #: integer words, for a write


def entry_beats(words: np.ndarray, p: ReplayParams) -> list[int]:
    """An output vector as the port beats that carry it (word 0 in the low bits of beat 0)."""
    bus = pack(words, p.word_bits)
    mask = (1 << p.port_bits) - 1
    return [(bus >> (b * p.port_bits)) & mask for b in range(p.beats)]


class ReplayBench(Bench):
    """Jobs are the cache transfers of a decode walk over frames; the event view is
    ``ReplayCacheController.submit(reads, writes)``."""

    name = "replay_cache_ctrl"

    def __init__(self, params: ReplayParams, jobs: list[ReplayOp]) -> None:
        super().__init__(params, jobs)
        self._mem: dict[int, int] = {}
        self._reads: list[list[int]] = []
        self._addrs: list[int] = []
        self._cur: list[int] = []
        self._beats: list[int] = []

    def ports(self) -> dict:
        p = self.params
        return {
            "rst": ResetSignal(0, active=1, isasync=False),
            "start": Signal(bool(0)),
            "op_write": Signal(bool(0)),
            "layer": unsigned_sig(bits_for(p.layers - 1)),
            "position": unsigned_sig(bits_for(p.tokens_per_frame - 1)),
            "wdata": unsigned_sig(p.port_bits),
            "busy": Signal(bool(0)),
            "done": Signal(bool(0)),
            "rvalid": Signal(bool(0)),
            "rdata": unsigned_sig(p.port_bits),
            "mem_addr": unsigned_sig(p.addr_bits),
            "mem_we": Signal(bool(0)),
            "mem_wdata": unsigned_sig(p.port_bits),
            "mem_rdata": unsigned_sig(p.port_bits),
            "err": Signal(bool(0)),
        }

    def module(self):
        return replay_cache_ctrl

    @block
    def environment(self, clk, ports):
        mem = self._mem
        addr, we, wd, rd = ports["mem_addr"], ports["mem_we"], ports["mem_wdata"], ports["mem_rdata"]
        first = [True]

        @always(clk.posedge)
        def cache_memory():
            a = int(addr.val)
            if we:
                mem[a] = int(wd.val)
            rd.next = mem.get(a, 0)

        @always(clk.negedge)
        def address_probe():
            # beat 0's address is registered by the start edge; record it once per job
            if ports["busy"] and first[0]:
                self._addrs.append(int(addr.val))
                first[0] = False
            if ports["done"]:
                first[0] = True

        return [cache_memory, address_probe]

    def load(self, ports: dict, op: ReplayOp) -> None:
        ports["op_write"].next = bool(op.write)
        ports["layer"].next = op.layer
        ports["position"].next = op.position
        self._beats = entry_beats(op.data, self.params) if op.write else []
        self._cur = []
        self.beat(ports, op, 0)

    def beat(self, ports: dict, op: ReplayOp, j: int) -> None:
        ports["wdata"].next = self._beats[j] if j < len(self._beats) else 0

    def observe(self, ports: dict, index: int) -> None:
        if ports["rvalid"]:
            self._cur.append(int(ports["rdata"].val))
        if ports["done"] and not self.jobs[index].write:
            self._reads.append(self._cur)

    def outputs(self) -> dict:
        return {"reads": self._reads, "addresses": self._addrs}

    def reference(self) -> dict:
        p = self.params
        model = ReplayCacheModel(p.layers, p.tokens_per_frame, p.words)
        reads = []
        for op in self.jobs:
            if op.write:
                model.write(op.layer, op.position, op.data)
            else:
                reads.append(entry_beats(model.read(op.layer, op.position).astype(np.int64), p))
        addrs = [
            cache_address(op.layer, op.position, p.tokens_per_frame, p.beats, p.base) for op in self.jobs
        ]
        return {"reads": reads, "addresses": addrs}

    def cost_cycles(self) -> list[int]:
        p = self.params
        return [int(replay_transfer_cycles(p.words, p.word_bits, p.port_bits))] * len(self.jobs)

    def event_cycles(self) -> int:
        from accelerator.replay_cache import ReplayCacheController

        p = self.params
        env, cost, memory, timeline = event_setup(
            {"replay_port_bits": p.port_bits, "precision": {"replay_cache_bits": p.word_bits}},
            {"hidden": p.words, "heads": 1},
        )
        reads = sum(not op.write for op in self.jobs)
        writes = len(self.jobs) - reads
        end = ReplayCacheController(env, cost, memory, timeline).submit(reads, writes, 0.0)
        # the controller alone: the activation-memory stages around its instructions are not in this bench
        rd, wr = cost.instruction("REPLAY_RD"), cost.instruction("REPLAY_WR")
        return int(round(end - (rd.fixed_cycles if reads else 0) - (wr.fixed_cycles if writes else 0)))


def decode_walk(p: ReplayParams, frames: int, replay_prob: float, rng: np.random.Generator) -> list[ReplayOp]:
    """Cache traffic of decoding ``frames`` frames: frame 0 writes every (layer, position); later frames
    either replay (read, then write the replayed value back, as the reference code does) or compute
    (write a fresh output)."""
    hi = 1 << (p.word_bits - 1)
    ops: list[ReplayOp] = []
    last: dict[tuple[int, int], np.ndarray] = {}
    for t in range(frames):
        for i in range(p.tokens_per_frame):
            for layer in range(p.layers):
                if t > 0 and rng.random() < replay_prob:
                    ops.append(ReplayOp(False, layer, i))
                    ops.append(ReplayOp(True, layer, i, last[layer, i]))
                else:
                    data = rng.integers(-hi, hi, size=p.words)
                    last[layer, i] = data
                    ops.append(ReplayOp(True, layer, i, data))
    return ops


def replay_case(rng: np.random.Generator) -> ReplayBench:
    word_bits = int(rng.choice([4, 8, 16]))
    p = ReplayParams(
        layers=int(rng.integers(1, 4)),
        tokens_per_frame=int(rng.integers(1, 5)),
        words=int(rng.integers(1, 40)),
        word_bits=word_bits,
        port_bits=int(rng.choice([8, 16, 32, 64, 128])),
        addr_bits=24,
        base=int(rng.integers(0, 1024)),
    )
    return ReplayBench(
        p, decode_walk(p, frames=int(rng.integers(2, 4)), replay_prob=float(rng.random()), rng=rng)
    )
