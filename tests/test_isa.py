"""The instruction set and the compiler: words that round-trip, and a stream whose content and cycle
count are exactly what the cost model charges per phase."""

from __future__ import annotations

import copy
import itertools
import random

import numpy as np
import pytest
from tiny_workload import TINY

from accelerator.compiler import StreamOptions, compile_layer, compile_step_tail, listing, static_groups
from accelerator.cost import CostModel
from accelerator.isa import BLOCK_BITS, MAPPED, MASK_BITS, MATRICES, Instr, Op, decode, encode, mask_of
from cosim.config import resolve

FULL_MASK = (1 << MASK_BITS) - 1
MAX_BLOCK = (1 << BLOCK_BITS) - 1

# -- encoding ------------------------------------------------------------------------------------------


def test_known_words():
    # op in 63:60, core in 59:54, filter 53, matrix 52:51, block 50:32, mask 31:0.
    # GEMV(1) qkv(0) block 0 on core 0 for entries 0 and 2: 1 << 60 | 0b101.
    assert encode(Instr(Op.GEMV, 0, 0b101, 0, 0)) == 0x1000_0000_0000_0005
    # DRS(4) MAPPED(63) entries 0-3: 4 << 60 | 63 << 54 (= 0x0FC0...) | 0xF.
    assert encode(Instr(Op.DRS, MAPPED, 0xF)) == 0x4FC0_0000_0000_000F
    # GEMV down(3) block 5 core 1, filtered: 1<<60 | 1<<54 | 1<<53 | 3<<51 | 5<<32 | 1.
    word = 1 << 60 | 1 << 54 | 1 << 53 | 3 << 51 | 5 << 32 | 1
    assert word == 0x1078_0005_0000_0001
    assert encode(Instr(Op.GEMV, 1, 1, 3, 5, True)) == word
    # every field at its maximum fills the word but the op's top bit: SYNC(8) = 0b1000.
    top = Instr(Op.SYNC, MAPPED, FULL_MASK, 3, MAX_BLOCK, True)
    assert encode(top) == 0x8FFF_FFFF_FFFF_FFFF


def _instructions():
    rng = random.Random(0)
    cores = [0, 1, 2, 31, 62, MAPPED]
    masks = [0, 1, 0b1010, 1 << 31, FULL_MASK]
    blocks = [0, 1, 1000, MAX_BLOCK]
    for op, core, mask, matrix, block, flt in itertools.product(
        Op, cores, masks, range(4), blocks, (False, True)
    ):
        yield Instr(op, core, mask, matrix, block, flt)
    for _ in range(2000):  # and random ones over the whole field ranges
        yield Instr(
            rng.choice(list(Op)),
            rng.randint(0, MAPPED),
            rng.getrandbits(MASK_BITS),
            rng.randint(0, 3),
            rng.getrandbits(BLOCK_BITS),
            rng.random() < 0.5,
        )


def test_round_trip_over_every_op_and_the_field_extremes():
    seen = set()
    for ins in _instructions():
        word = encode(ins)
        assert 0 <= word < 1 << 64
        back = decode(word)
        assert back == ins and type(back.op) is Op and type(back.filter) is bool
        seen.add(word)
    # distinct instructions give distinct words (no two fields overlap)
    assert len(seen) == len(set(_instructions()))


@pytest.mark.parametrize(
    "fields",
    [
        {"mask": 1 << MASK_BITS},
        {"mask": -1},
        {"block": 1 << BLOCK_BITS},
        {"block": -1},
        {"core": MAPPED + 1},
        {"core": -1},
    ],
)
def test_out_of_range_fields_are_refused(fields):
    with pytest.raises(ValueError, match="does not fit"):
        encode(Instr(Op.GEMV, **{"core": 0, "mask": 1, **fields}))


@pytest.mark.parametrize("matrix", [len(MATRICES), -1])
def test_out_of_range_matrix_is_refused(matrix):
    with pytest.raises(ValueError):
        encode(Instr(Op.GEMV, 0, 1, matrix, 0, False))


def test_decode_refuses_an_unknown_op():
    with pytest.raises(ValueError):
        decode(0)  # op 0 is no instruction
    with pytest.raises(ValueError):
        decode(9 << 60)


def test_mask_of():
    assert mask_of([]) == 0
    assert mask_of([0, 2]) == 0b101
    assert mask_of(range(32)) == FULL_MASK
    assert mask_of(np.array([31])) == 1 << 31


# -- the compiled stream ---------------------------------------------------------------------------------


def _cost(*overrides: str) -> CostModel:
    # weight_buffer_KiB=1 splits the matrices into several row blocks (tiny model, 64 lanes, 4-bit weights:
    # a 64-row tile of a 64-column matrix is 64*64/2 = 2048 B > 1 KiB, so one tile per block):
    # qkv 128 rows -> 2 blocks, o 64 -> 1, up 2*176 = 352 -> 6, down 64 -> 1.
    w = resolve(copy.deepcopy(TINY), ["hardware.weight_buffer_KiB=1", *overrides])
    cost = CostModel(w.hardware, w.model, drs_overhead_cycles=w.scheduler.overhead_cycles)
    assert {m: len(b) for m, b in cost.blocks.items()} == {"qkv": 2, "o": 1, "up": 6, "down": 1}
    return cost


def _opts(batch=4, cores=2, shared=True, tas=True, drs=True, cache=True, barrier=True) -> StreamOptions:
    return StreamOptions(batch, cores, shared, tas, drs, cache, barrier)


def _gemvs(stream, matrix: str):
    m = MATRICES.index(matrix)
    return [i for i in stream if i.op == Op.GEMV and i.matrix == m]


SHAPES = [(4, 2), (5, 3), (3, 1), (2, 4)]  # (batch, cores): even, uneven, one core, idle cores


@pytest.mark.parametrize("batch,cores", SHAPES)
@pytest.mark.parametrize("tas,drs", [(True, True), (True, False), (False, False), (False, True)])
@pytest.mark.parametrize("barrier", [True, False])
def test_stream_content(batch, cores, tas, drs, barrier):
    cost = _cost()
    o = _opts(batch, cores, tas=tas, drs=drs, barrier=barrier)
    stream = compile_layer(cost, o)
    groups = [list(range(c, batch, cores)) for c in range(cores)]  # entry e on core e mod cores
    assert static_groups(batch, cores) == groups
    static = {e: e % cores for e in range(batch)}

    for matrix in MATRICES:
        gemvs = _gemvs(stream, matrix)
        for b in range(len(cost.blocks[matrix])):
            for e in range(batch):  # every entry in exactly one GEMV per block of every matrix
                assert sum(e in i.entries for i in gemvs if i.block == b) == 1, (matrix, b, e)
        for i in gemvs:
            assert i.mask != 0
            if matrix in ("qkv", "o"):  # static, unfiltered, one per core and block (shared dataflow)
                assert not i.filter and i.core != MAPPED
                assert all(static[e] == i.core for e in i.entries)
                assert i.entries == groups[i.core]
            elif drs:  # the MLP after DRS: filtered, routed by the mapping registers
                assert i.filter and i.core == MAPPED and i.entries == list(range(batch))
            else:  # static per core, filtered (the cache is on: replayed entries are dropped)
                assert i.filter and i.core != MAPPED and i.entries == groups[i.core]
    attn = [i for i in stream if i.op == Op.ATTN]
    assert sorted(e for i in attn for e in i.entries) == list(range(batch))
    assert all(len(i.entries) == 1 and i.core == static[i.entries[0]] for i in attn)

    ops = [i.op for i in stream]
    tas_ins = [i for i in stream if i.op == Op.TAS]
    if tas:
        assert [(i.core, i.entries) for i in tas_ins] == [(c, g) for c, g in enumerate(groups) if g]
        for i in tas_ins:  # after the last QKV block of its core
            last_qkv = max(k for k, j in enumerate(stream) if j in _gemvs(stream, "qkv") and j.core == i.core)
            assert stream.index(i) > last_qkv
    else:
        assert not tas_ins
    if drs:
        assert ops.count(Op.DRS) == 1
        d = ops.index(Op.DRS)
        assert stream[d].mask == mask_of(range(batch))
        assert all(stream.index(i) < d for i in _gemvs(stream, "o"))
        assert all(stream.index(i) > d for i in _gemvs(stream, "up") + _gemvs(stream, "down"))
    else:
        assert Op.DRS not in ops
    # the replay cache: each entry is in exactly one read and one write, all filtered
    for op in (Op.REPLAY_RD, Op.REPLAY_WR):
        ins = [i for i in stream if i.op == op]
        assert all(i.filter for i in ins)
        assert sorted(e for i in ins for e in i.entries) == list(range(batch))
    assert (ops.count(Op.SYNC) == 1 and ops[-1] == Op.SYNC) if barrier else Op.SYNC not in ops
    # the listing prints one encoded line per instruction
    assert len(listing(stream).splitlines()) == len(stream)


@pytest.mark.parametrize("drs", [True, False])
def test_per_entry_dataflow_issues_one_gemv_per_entry_and_block(drs):
    cost = _cost()
    batch, cores = 5, 2
    stream = compile_layer(cost, _opts(batch, cores, shared=False, drs=drs))
    for matrix in MATRICES:
        gemvs = _gemvs(stream, matrix)
        blocks = len(cost.blocks[matrix])
        assert all(len(i.entries) == 1 for i in gemvs)
        assert sorted((i.entries[0], i.block) for i in gemvs) == [
            (e, b) for e in range(batch) for b in range(blocks)
        ]


def test_without_the_cache_nothing_is_filtered_or_replayed():
    stream = compile_layer(_cost(), _opts(tas=False, drs=False, cache=False))
    assert not any(i.filter for i in stream)
    assert not {Op.REPLAY_RD, Op.REPLAY_WR, Op.TAS, Op.DRS} & {i.op for i in stream}


def test_step_tail():
    assert compile_step_tail(_cost(), _opts()) == ()  # the tiny model has no work outside its layers
    cost = _cost("model.extra_macs_per_token=1000")
    tail = compile_step_tail(cost, _opts(batch=5, cores=3, barrier=True))
    assert [(i.op, i.core, i.entries) for i in tail] == [
        (Op.EXTRA, 0, [0, 3]),
        (Op.EXTRA, 1, [1, 4]),
        (Op.EXTRA, 2, [2]),
        (Op.SYNC, MAPPED, [0, 1, 2, 3, 4]),
    ]
    assert Op.SYNC not in [i.op for i in compile_step_tail(cost, _opts(batch=5, cores=3, barrier=False))]


# -- the stream charges what the cost model charges -------------------------------------------------------


@pytest.mark.parametrize("batch,cores", SHAPES)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("weight_buffer_kib", [1, 8192])
def test_stream_cycles_equal_the_cost_model_per_phase(batch, cores, shared, weight_buffer_kib):
    """Sum of the instructions' cycles per phase (every entry computing: the stream before the filter)
    equals the cost model's per-phase demand of each core times its entries, summed over cores."""
    w = resolve(
        copy.deepcopy(TINY),
        [
            f"hardware.weight_buffer_KiB={weight_buffer_kib}",
            "hardware.input_buffers=1",
            f"hardware.weights_shared_across_batch={str(shared).lower()}",
        ],
    )
    cost = CostModel(w.hardware, w.model, drs_overhead_cycles=w.scheduler.overhead_cycles)
    ctx = 37
    stream = compile_layer(cost, _opts(batch, cores, shared=shared))
    phase_of = {"qkv": "qkv", "o": "attention", "up": "mlp", "down": "mlp"}
    got = {"qkv": 0, "attention": 0, "mlp": 0, "tas": 0, "drs": 0, "replay": 0}
    for i in stream:
        n = len(i.entries)
        if i.op == Op.GEMV:
            matrix = MATRICES[i.matrix]
            # a mapped instruction runs on every core that gets entries (round robin: entry e on core e mod
            # cores, every entry computing), and drains its outputs on each
            runs = len({e % cores for e in i.entries}) if i.core == MAPPED else 1
            got[phase_of[matrix]] += (
                n * cost.block_cycles[matrix][i.block] + runs * cost.block_drain[matrix][i.block]
            )
        elif i.op == Op.ATTN:
            got["attention"] += int(cost.attention_entry_cycles(ctx))
        elif i.op == Op.TAS:
            got["tas"] += cost.instruction("TAS").total_cycles(n)  # its first query beat read, then n jobs
        elif i.op == Op.DRS:
            got["drs"] += int(cost.drs(n).cycles)
        elif i.op in (Op.REPLAY_RD, Op.REPLAY_WR):
            got["replay"] += cost.instruction(i.op.name).total_cycles(n)  # each entry read or written
    per_core = [len(g) for g in static_groups(batch, cores)]
    want = {
        "qkv": sum(int(cost.qkv(n).cycles) for n in per_core),
        "attention": sum(int(cost.attention(n, ctx).cycles) for n in per_core),
        "mlp": sum(int(cost.mlp(n).cycles) for n in per_core),
        "tas": sum(int(cost.tas(n).cycles) for n in per_core),  # one TAS instruction per core's group
        "drs": int(cost.drs(batch).cycles),
        # read and write counted once each per entry; one of the two moves happens at run time
        "replay": int(cost.replay(batch, 0).cycles) + int(cost.replay(0, batch).cycles),
    }
    assert got == want
    # and the GEMV weight bytes of the static stream: once per core and block (shared) or per entry and block
    static_stream = compile_layer(cost, _opts(batch, cores, shared=shared, drs=False))
    streamed = sum(
        cost.blocks[MATRICES[i.matrix]][i.block] * cost.matrices[MATRICES[i.matrix]][1] * cost.w_bytes
        for i in static_stream
        if i.op == Op.GEMV
    )
    # per core: the whole matrix once if it has an entry (shared), else once per entry
    weights = cost.qkv_weight_bytes + cost.o_weight_bytes + cost.mlp_weight_bytes
    want_bytes = sum((min(n, 1) if shared else n) * weights for n in per_core)
    assert streamed == pytest.approx(want_bytes, rel=1e-12)
