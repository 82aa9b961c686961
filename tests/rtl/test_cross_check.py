"""One harness, three views: RTL cycles == cost formula == event component; outputs == Python reference.

Randomized over parameters and stimulus (hypothesis draws the seed of each module's case generator, which
draws shapes, lanes, widths, cores, batch, ports and data), plus hand-picked edge cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from accelerator.rtl.drs import DrsBench, DrsJob, DrsParams, drs_case
from accelerator.rtl.harness import check
from accelerator.rtl.pe_lane import GemvBench, GemvJob, GemvParams, gemv_case
from accelerator.rtl.replay_cache import ReplayBench, ReplayOp, ReplayParams, decode_walk, replay_case
from accelerator.rtl.tas_unit import TasBench, TasJob, TasParams, tas_case, tas_fixed

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**32 - 1)


def _assert_ok(bench) -> None:
    r = check(bench)
    assert r.rtl_cycles == r.cost_cycles, f"{bench.params}: rtl {r.rtl_cycles} != cost {r.cost_cycles}"
    assert sum(r.rtl_cycles) == r.event_cycles, (
        f"{bench.params}: rtl {sum(r.rtl_cycles)} != event {r.event_cycles}"
    )
    assert r.outputs_equal, r.mismatch


@SETTINGS
@given(seed=SEEDS)
def test_gemv_tile_three_views(seed: int) -> None:
    _assert_ok(gemv_case(np.random.default_rng(seed)))


@SETTINGS
@given(seed=SEEDS)
def test_tas_unit_three_views(seed: int) -> None:
    _assert_ok(tas_case(np.random.default_rng(seed)))


@SETTINGS
@given(seed=SEEDS)
def test_drs_three_views(seed: int) -> None:
    _assert_ok(drs_case(np.random.default_rng(seed)))


@SETTINGS
@given(seed=SEEDS)
def test_replay_cache_three_views(seed: int) -> None:
    _assert_ok(replay_case(np.random.default_rng(seed)))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    heads=st.sampled_from([1, 2, 3, 4, 6, 8]),
    head_dim=st.integers(1, 40),
    lanes=st.integers(1, 20),
    width=st.sampled_from([4, 8, 16]),
    strict=st.booleans(),
    data=st.data(),
)
def test_tas_unit_drawn_parameters(
    heads: int, head_dim: int, lanes: int, width: int, strict: bool, data
) -> None:
    """Parameters and vectors drawn by hypothesis directly (so a failure shrinks to a small design)."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    q = data.draw(arrays(np.int64, (heads, head_dim), elements=st.integers(lo, hi)))
    k = data.draw(arrays(np.int64, (heads, head_dim), elements=st.integers(lo, hi)))
    mean, _ = tas_fixed(q, k, 0, strict, heads)
    tau = mean + data.draw(st.integers(-1, 1))
    _assert_ok(
        TasBench(
            TasParams(heads=heads, head_dim=head_dim, lanes=lanes, width=width), [TasJob(q, k, tau, strict)]
        )
    )


@pytest.mark.parametrize(
    "lanes,rows,cols",
    [(1, 1, 1), (4, 3, 1), (4, 4, 1), (4, 5, 2), (8, 1, 7), (3, 10, 3), (16, 16, 16)],
)
def test_gemv_edges(lanes: int, rows: int, cols: int) -> None:
    """Single element, a partial last tile, a single column, rows below the lane count."""
    rng = np.random.default_rng(rows * 100 + cols)
    job = GemvJob(rng.integers(-128, 128, size=(rows, cols)), rng.integers(-32768, 32768, size=cols))
    bench = GemvBench(GemvParams(lanes=lanes, max_cols=16), [job, job])
    r = check(bench)
    assert r.outputs_equal and r.rtl_cycles == r.cost_cycles


def test_gemv_extremes_do_not_overflow() -> None:
    """All weights -128 and inputs -32768: the largest products, summed over the buffer depth."""
    cols = 64
    job = GemvJob(np.full((4, cols), -128), np.full(cols, -32768))
    r = check(GemvBench(GemvParams(lanes=4, max_cols=cols), [job]))
    assert r.outputs_equal and r.rtl_cycles == r.cost_cycles


@pytest.mark.parametrize("heads,head_dim,lanes", [(1, 1, 1), (3, 5, 8), (8, 16, 16), (5, 7, 2), (2, 9, 4)])
def test_tas_edges(heads: int, head_dim: int, lanes: int) -> None:
    """Lanes above head_dim (padding), one lane (no tree), non power-of-two heads (reciprocal mean)."""
    rng = np.random.default_rng(heads * head_dim * lanes)
    p = TasParams(heads=heads, head_dim=head_dim, lanes=lanes, width=8)
    jobs = []
    for strict in (False, True):
        q = rng.integers(-128, 128, size=(heads, head_dim))
        k = rng.integers(-128, 128, size=(heads, head_dim))
        mean, _ = tas_fixed(q, k, 0, strict, heads)
        jobs += [TasJob(q, k, mean + d, strict) for d in (-1, 0, 1)]  # the tie decides >= vs >
    r = check(TasBench(p, jobs))
    assert r.outputs_equal and r.cycles_equal


def test_tas_tie_follows_compare_mode() -> None:
    """At TAS == tau the paper's rule (>=) replays and the reference code's (>) does not."""
    q = np.ones((2, 4), dtype=np.int64)
    k = np.ones((2, 4), dtype=np.int64)
    mean, _ = tas_fixed(q, k, 0, False, 2)
    bench = TasBench(
        TasParams(heads=2, head_dim=4, lanes=4, width=8),
        [TasJob(q, k, mean, False), TasJob(q, k, mean, True)],
    )
    r = check(bench)
    assert r.outputs_equal
    assert bench.reference() == [(mean, True), (mean, False)]


@pytest.mark.parametrize(
    "cores,batch,bits", [(1, 1, [1]), (4, 1, [0]), (3, 10, [1] * 10), (4, 7, [0] * 7), (32, 32, [1, 0] * 16)]
)
def test_drs_edges(cores: int, batch: int, bits: list[int]) -> None:
    instrs = [(e % batch, e) for e in range(2 * batch + 1)]
    bench = DrsBench(DrsParams(cores=cores), [DrsJob(np.array(bits, dtype=bool), instrs)] * 2, batch)
    r = check(bench)
    assert r.outputs_equal, r.mismatch
    assert r.rtl_cycles == r.cost_cycles == [batch + 1, batch + 1]


def test_replay_single_beat_and_addresses() -> None:
    """One-beat entries (port wider than the output) and the ring-buffer addresses of every transfer."""
    p = ReplayParams(layers=2, tokens_per_frame=3, words=4, word_bits=8, port_bits=64, addr_bits=16, base=5)
    bench = ReplayBench(p, decode_walk(p, frames=3, replay_prob=0.5, rng=np.random.default_rng(0)))
    r = check(bench)
    assert r.outputs_equal and r.cycles_equal
    assert all(c == 1 + 2 for c in r.rtl_cycles)


def test_replay_reads_return_what_frame_before_wrote() -> None:
    p = ReplayParams(layers=1, tokens_per_frame=2, words=5, word_bits=16, port_bits=32, addr_bits=16)
    a, b = np.arange(5) - 2, np.arange(5) * 100
    ops = [ReplayOp(True, 0, 0, a), ReplayOp(True, 0, 1, b), ReplayOp(False, 0, 0), ReplayOp(False, 0, 1)]
    r = check(ReplayBench(p, ops))
    assert r.outputs_equal and r.cycles_equal


def test_cross_check_catches_wrong_outputs() -> None:
    """The output comparison is not vacuous: a reference that differs in one value is caught."""
    bench = tas_case(np.random.default_rng(3))
    orig = bench.reference

    def skewed():
        ref = orig()
        mean, rep = ref[0]
        return [(mean + 1, rep), *ref[1:]]

    bench.reference = skewed
    assert not check(bench).outputs_equal


def test_rtl_timing_is_derived_independently_of_the_cost_model() -> None:
    """The TAS unit's adder-tree depth comes from the tree it builds (``tree_levels``), not from
    ``cost.adder_tree_depth``, so an edit of the cost formula is caught by the cycle cross-check instead
    of changing both sides. The two derivations agree on every lane count up to 4096."""
    import accelerator.rtl.tas_unit as tas_rtl
    from accelerator.cost import adder_tree_depth
    from accelerator.rtl.common import tree_levels

    assert not hasattr(tas_rtl, "adder_tree_depth")
    assert [tree_levels(n) for n in range(1, 4097)] == [adder_tree_depth(n) for n in range(1, 4097)]
