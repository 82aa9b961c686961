"""The compiler: the pre-compiled instruction stream of one decoder layer of one decode step.

The stream does not depend on the replay decisions (the paper pre-compiles it once); DRS filters and
routes it at run time. It does depend on what the decode step does (frame 0 has no TAS and no DRS) and on
the hardware's options, so one stream is compiled per combination and reused for every layer and step.

Order, per layer (entry e statically on core e mod cores; instructions of different cores interleaved so
that one full queue does not starve the others):

1. GEMV qkv, block by block, per core for its static entries;
2. TAS per core for its entries, which starts once that core's qkv is done (it overlaps attention);
3. ATTN per entry, then GEMV o;
4. DRS, which waits for the layer's index register (from frame 1 on, with DRS on);
5. REPLAY_RD of the replayed entries, GEMV up and down of the computing entries, filtered (replayed
   entries dropped) and dispatched by the mapping registers (DRS) or statically, then REPLAY_WR;
6. SYNC, with the layer barrier on.

After the last layer of a step: EXTRA per core, when the model has per-token work outside its layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from accelerator.cost import CostModel
from accelerator.isa import MAPPED, MATRICES, Instr, Op, mask_of


@dataclass(frozen=True)
class StreamOptions:
    batch: int
    cores: int
    shared_weights: bool  # one GEMV per core and block for all its entries, else one per entry
    tas: bool  # the TAS unit scores this step's entries
    drs: bool  # DRS maps this step's computing entries (else the static mapping stands)
    cache: bool  # replayed entries read the replay cache; computed outputs are stored in it
    barrier: bool  # SYNC at the end of each layer


def static_groups(batch: int, cores: int) -> list[list[int]]:
    """Entries of each core under the static mapping (entry e on core e mod cores)."""
    return [list(range(c, batch, cores)) for c in range(cores)]


def _gemvs(matrix: str, blocks: int, groups: list[list[int]], shared: bool, core=None, filt=False):
    m = MATRICES.index(matrix)
    for b in range(blocks):
        for c, entries in enumerate(groups):
            if not entries:
                continue
            target = c if core is None else core
            if shared:
                yield Instr(Op.GEMV, target, mask_of(entries), m, b, filt)
            else:
                for e in entries:
                    yield Instr(Op.GEMV, target, 1 << e, m, b, filt)


def compile_layer(cost: CostModel, o: StreamOptions) -> tuple[Instr, ...]:
    groups = static_groups(o.batch, o.cores)
    blocks = {m: len(cost.blocks[m]) for m in MATRICES}
    out: list[Instr] = []
    out += _gemvs("qkv", blocks["qkv"], groups, o.shared_weights)
    if o.tas:
        out += [Instr(Op.TAS, c, mask_of(g)) for c, g in enumerate(groups) if g]
    for i in range(max(len(g) for g in groups)):
        out += [Instr(Op.ATTN, c, 1 << g[i]) for c, g in enumerate(groups) if i < len(g)]
    out += _gemvs("o", blocks["o"], groups, o.shared_weights)
    everyone = mask_of(range(o.batch))
    filt = o.cache  # without replay every entry computes: nothing to drop
    if o.drs:
        out.append(Instr(Op.DRS, MAPPED, everyone))
        mlp_groups, core = [list(range(o.batch))], MAPPED
    else:
        mlp_groups, core = groups, None
    # Replay-cache instructions per group of entries whose bits the filter needs: everyone after DRS,
    # each static core's group without it (so one core's MLPs need not wait for the other's TAS).
    cache_groups = [list(range(o.batch))] if o.drs else [g for g in groups if g]
    if o.cache:
        out += [Instr(Op.REPLAY_RD, MAPPED, mask_of(g), filter=True) for g in cache_groups]
    for matrix in ("up", "down"):
        out += _gemvs(matrix, blocks[matrix], mlp_groups, o.shared_weights, core, filt)
    if o.cache:
        out += [Instr(Op.REPLAY_WR, MAPPED, mask_of(g), filter=True) for g in cache_groups]
    if o.barrier:
        out.append(Instr(Op.SYNC, MAPPED, everyone))
    return tuple(out)


def compile_step_tail(cost: CostModel, o: StreamOptions) -> tuple[Instr, ...]:
    """Instructions after the last layer of a step: the per-token work outside the layers."""
    if not cost.extra_cycles:
        return ()
    out = tuple(Instr(Op.EXTRA, c, mask_of(g)) for c, g in enumerate(static_groups(o.batch, o.cores)) if g)
    return out + ((Instr(Op.SYNC, MAPPED, mask_of(range(o.batch))),) if o.barrier else ())


@lru_cache(maxsize=64)
def _cached(cost: CostModel, o: StreamOptions) -> tuple[tuple[Instr, ...], tuple[Instr, ...]]:
    return compile_layer(cost, o), compile_step_tail(cost, o)


def program(cost: CostModel, o: StreamOptions) -> tuple[tuple[Instr, ...], tuple[Instr, ...]]:
    """(layer stream, step tail) for these options, compiled once."""
    return _cached(cost, o)


def listing(stream, cost: CostModel | None = None, ctx: int = 0) -> str:
    """One instruction per line: its word, its mnemonic and, given the cost model, the cycles it takes on
    every entry of its mask (filtered ones take fewer when entries replay) and the bytes it moves."""
    from accelerator.isa import encode

    lines = []
    for i in stream:
        line = f"{encode(i):016x}  {i}"
        if cost is not None:
            c = cost.instruction(i.op.name, MATRICES[i.matrix], i.block, ctx)
            n = len(i.entries)
            nbytes = c.total_bytes(n)
            where = f" {c.group}" if c.group and nbytes else ""
            line = f"{line:<72s} {c.total_cycles(n):>10,} cycles {int(nbytes):>12,} B{where}"
        lines.append(line)
    return "\n".join(lines)
