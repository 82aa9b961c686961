"""The accelerator's instruction set: what the pre-compiled stream of a decoder layer is made of.

One instruction is one 64-bit word. The same words drive the event model (``accelerator.machine``) and
the RTL top level, so the simulated and the synthesized machine execute one stream.

| bits  | field  | meaning |
|-------|--------|---------|
| 63:60 | op     | :class:`Op` |
| 59:54 | core   | static core, or 63 = ``MAPPED``: the core DRS's mapping registers name for each entry |
| 53    | filter | drop the entries of ``mask`` that replay (DRS's instruction filter) |
| 52:51 | matrix | GEMV: which weight matrix of the layer (:data:`MATRICES`) |
| 50:32 | block  | GEMV: row block of that matrix (one operand buffer of whole PE tiles) |
| 31:0  | mask   | batch entries the instruction applies to (bit e = entry e; the index register's width) |

A GEMV of several entries applies each streamed weight block to all of them (the shared weight dataflow);
with ``hardware.weights_shared_across_batch: false`` the compiler emits one GEMV per entry instead. Sizes
and the context length are not in the word: they are the layer's dimensions and the step counter, which
the sequencer holds in registers.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

MATRICES = ("qkv", "o", "up", "down")
#: ``core`` field value: dispatch each entry to the core in its mapping register.
MAPPED = 63
MASK_BITS = 32
BLOCK_BITS = 19


class Op(IntEnum):
    GEMV = 1  # a weight block times the input vectors of the entries in mask (weights streamed in)
    ATTN = 2  # one entry: its keys and values streamed in, per head scores then values, K/V appended
    TAS = 3  # TAS unit: score the entries in mask against their aligned keys, write their index bits
    DRS = 4  # scheduler: wait for the layer's index register, write the mapping registers
    REPLAY_RD = 5  # replay-cache controller: fetch the cached MLP output of each replayed entry in mask
    REPLAY_WR = 6  # replay-cache controller: store the fresh MLP output of each computing entry in mask
    EXTRA = 7  # per-token work outside the decoder layers (e.g. a visual decoder) for the entries in mask
    SYNC = 8  # layer barrier: wait until every instruction before it has finished


class Instr(NamedTuple):
    op: Op
    core: int = MAPPED
    mask: int = 0
    matrix: int = 0
    block: int = 0
    filter: bool = False

    @property
    def entries(self) -> list[int]:
        return [e for e in range(MASK_BITS) if self.mask >> e & 1]

    def __str__(self) -> str:
        core = "mapped" if self.core == MAPPED else f"core{self.core}"
        extra = f" {MATRICES[self.matrix]}[{self.block}]" if self.op == Op.GEMV else ""
        flt = " filtered" if self.filter else ""
        return f"{self.op.name}{extra} {core} entries={self.entries}{flt}"


def encode(i: Instr) -> int:
    if (
        not 0 <= i.mask < 1 << MASK_BITS
        or not 0 <= i.block < 1 << BLOCK_BITS
        or not 0 <= i.core <= MAPPED
        or not 0 <= i.matrix < len(MATRICES)
    ):
        raise ValueError(f"instruction does not fit its word: {i!r}")
    return int(i.op) << 60 | i.core << 54 | int(i.filter) << 53 | i.matrix << 51 | i.block << 32 | i.mask


def decode(word: int) -> Instr:
    return Instr(
        op=Op(word >> 60 & 0xF),
        core=word >> 54 & 0x3F,
        mask=word & ((1 << MASK_BITS) - 1),
        matrix=word >> 51 & 0x3,
        block=word >> 32 & ((1 << BLOCK_BITS) - 1),
        filter=bool(word >> 53 & 1),
    )


def mask_of(entries) -> int:
    out = 0
    for e in entries:
        out |= 1 << int(e)
    return out
