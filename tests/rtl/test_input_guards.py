"""Runtime input guards: a ``start`` with out-of-range runtime inputs is refused (nothing starts; the
sampling edge registers ``done`` and ``err``, a one-edge job) and the in-range jobs around it run exactly
as without it (same latencies, same outputs, state untouched).

Each test mixes refused starts into a job stream of the unit's own bench (a subclass that drives the bad
values when it meets a marker job) and compares the accepted jobs with the same stream without them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from accelerator.rtl.common import unsigned_sig
from accelerator.rtl.drs import DrsBench, DrsJob, DrsParams
from accelerator.rtl.harness import check, simulate
from accelerator.rtl.pe_lane import GemvBench, GemvJob, GemvParams
from accelerator.rtl.replay_cache import ReplayBench, ReplayOp, ReplayParams, decode_walk

# ---------------------------------------------------------------------------------------------------
# GEMV tile: cols in 1..MAX_COLS, rows in 1..2^ROW_BITS - 1
# ---------------------------------------------------------------------------------------------------


class BadGemv(GemvJob):
    """A GEMV start with these ``rows``/``cols`` values and no data."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__(np.zeros((min(rows, 4), 0)), np.zeros(0))
        self.rows, self.cols = rows, cols


class GuardedGemv(GemvBench):
    """The GEMV bench with refused starts mixed in; outputs also carry ``err`` of every ``done``."""

    def __init__(self, params, jobs, rows_bits: int | None = None) -> None:
        super().__init__(params, jobs)
        self.rows_bits = rows_bits  #: drive ``rows`` wider than ROW_BITS
        self.errs: list[bool] = []

    def fresh(self):
        return type(self)(self.params, self.jobs, self.rows_bits)

    def ports(self) -> dict:
        ports = super().ports()
        if self.rows_bits:
            ports["rows"] = unsigned_sig(self.rows_bits)
        return ports

    def preload(self, ports, job):
        return iter(()) if isinstance(job, BadGemv) else super().preload(ports, job)

    def load(self, ports, job) -> None:
        if isinstance(job, BadGemv):
            ports["rows"].next, ports["cols"].next = job.rows, job.cols
        else:
            super().load(ports, job)

    def observe(self, ports, index: int) -> None:
        super().observe(ports, index)
        assert not (ports["err"] and ports["busy"]), "a refused start made the tile busy"
        if ports["done"]:
            self.errs.append(bool(ports["err"]))

    def outputs(self) -> dict:
        return {"y": self._out, "errs": self.errs}

    def reference(self) -> dict:
        return {"y": super().reference(), "errs": [False] * len(self.jobs)}


def _gemv_jobs(rng, p: GemvParams, shapes) -> list[GemvJob]:
    return [
        GemvJob(
            rng.integers(-(1 << (p.w_bits - 1)), 1 << (p.w_bits - 1), size=s),
            rng.integers(-(1 << (p.x_bits - 1)), 1 << (p.x_bits - 1), size=s[1]),
        )
        for s in shapes
    ]


def _mixed(good: list, bad: list) -> list:
    """Bad starts first, between every two good jobs, and last."""
    out = list(bad)
    for g in good:
        out += [g, *bad]
    return out


def _split(values: list, flags: list[bool]) -> tuple[list, list]:
    """(values where flag, values where not flag)."""
    return [v for v, f in zip(values, flags, strict=True) if f], [
        v for v, f in zip(values, flags, strict=True) if not f
    ]


def test_gemv_refuses_out_of_range_cols_and_rows() -> None:
    p = GemvParams(lanes=2, max_cols=8, row_bits=4)
    good = _gemv_jobs(np.random.default_rng(3), p, [(3, 8), (15, 1), (2, 5)])
    # cols: 0, MAX_COLS + 1, the largest the (CB + 1)-bit port takes; rows: 0
    bad = [BadGemv(3, 0), BadGemv(3, 9), BadGemv(3, 31), BadGemv(0, 4)]
    jobs = _mixed(good, bad)
    is_bad = [isinstance(j, BadGemv) for j in jobs]
    res = simulate(GuardedGemv(p, jobs))
    plain = GuardedGemv(p, good)
    ref = check(plain)  # the same instructions alone: cycles == cost, outputs == W x, err low
    assert ref.rtl_cycles == ref.cost_cycles and ref.outputs_equal, ref.mismatch
    bad_lat, good_lat = _split(res.latencies, is_bad)
    assert bad_lat == [1] * len(bad_lat)  # refused: done (and err) on the edge that sampled start
    assert good_lat == ref.rtl_cycles
    assert res.outputs["errs"] == is_bad
    assert _split(res.outputs["y"], is_bad)[1] == plain.reference()["y"]


def test_gemv_rows_beyond_row_bits_refused_when_the_port_is_wider() -> None:
    """With ``rows`` driven wider than ROW_BITS, 2^ROW_BITS rows (whose row indices ``y_row`` cannot
    carry) is refused, and 2^ROW_BITS - 1 runs."""
    p = GemvParams(lanes=4, max_cols=4, row_bits=4)
    good = _gemv_jobs(np.random.default_rng(9), p, [(15, 2)])
    res = simulate(GuardedGemv(p, [BadGemv(16, 2), BadGemv(63, 2), *good], rows_bits=6))
    plain = GuardedGemv(p, good, rows_bits=6)
    ref = check(plain)
    assert ref.rtl_cycles == ref.cost_cycles and ref.outputs_equal, ref.mismatch
    assert res.latencies == [1, 1, *ref.rtl_cycles]
    assert res.outputs["errs"] == [True, True, False]
    assert res.outputs["y"][2:] == plain.reference()["y"]


# ---------------------------------------------------------------------------------------------------
# DRS scheduler: batch in 1..32
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadDrs(DrsJob):
    batch: int = 0


class GuardedDrs(DrsBench):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.seen: list[tuple[bool, int, int]] = []

    def fresh(self):
        return type(self)(self.params, self.jobs, self.batch)

    def load(self, ports, job) -> None:
        super().load(ports, job)
        if isinstance(job, BadDrs):
            ports["batch"].next = job.batch
            ports["index"].next = 0xFFFFFFFF  # would overwrite every shadow register if it were taken

    def observe(self, ports, index: int) -> None:
        if ports["done"]:
            self.seen.append((bool(ports["err"]), int(ports["mapping"].val), int(ports["map_valid"].val)))
            if isinstance(self.jobs[index], BadDrs):
                return  # nothing was scheduled: no instructions to stream
        super().observe(ports, index)

    def outputs(self) -> dict:
        return {**super().outputs(), "seen": self.seen}


@pytest.mark.parametrize("bad_batch", [0, 33, 63])
def test_drs_refuses_batch_outside_1_to_32(bad_batch: int) -> None:
    rng = np.random.default_rng(bad_batch)
    batch, cores = 7, 3
    good = [
        DrsJob(
            rng.random(batch) < 0.5,
            [(int(rng.integers(0, batch)), int(rng.integers(0, 256))) for _ in range(9)],
        )
        for _ in range(3)
    ]
    bad = BadDrs(np.zeros(batch, bool), [], batch=bad_batch)
    jobs = [bad, good[0], bad, good[1], bad, bad, good[2]]
    mixed = GuardedDrs(DrsParams(cores=cores), jobs, batch)
    res = simulate(mixed)
    plain = DrsBench(DrsParams(cores=cores), good, batch)
    ref = check(plain)
    assert ref.ok
    is_bad = [isinstance(j, BadDrs) for j in jobs]
    assert [lat for lat, b in zip(res.latencies, is_bad, strict=True) if b] == [1] * 4
    assert [lat for lat, b in zip(res.latencies, is_bad, strict=True) if not b] == ref.rtl_cycles
    seen = res.outputs["seen"]
    assert [s[0] for s in seen] == is_bad
    # a refused start leaves the committed mapping registers as they were (all-zero before the first)
    for k, b in enumerate(is_bad):
        if b:
            assert seen[k][1:] == ((0, 0) if k == 0 else seen[k - 1][1:])
    for key in ("mapping", "per_core", "dispatched"):
        assert res.outputs[key] == plain.reference()[key]


# ---------------------------------------------------------------------------------------------------
# Replay-cache controller: layer < LAYERS, position < TPF
# ---------------------------------------------------------------------------------------------------


class GuardedReplay(ReplayBench):
    layer_bits: int | None = None  #: drive ``layer`` wider than needed

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.errs: list[bool] = []
        self.mem_writes = 0

    def fresh(self):
        return type(self)(self.params, self.jobs)

    def ports(self) -> dict:
        ports = super().ports()
        if self.layer_bits:
            ports["layer"] = unsigned_sig(self.layer_bits)
        return ports

    def observe(self, ports, index: int) -> None:
        if ports["done"]:
            self.errs.append(bool(ports["err"]))
            if ports["err"]:
                return
        super().observe(ports, index)

    def outputs(self) -> dict:
        return {**super().outputs(), "errs": self.errs, "mem": dict(self._mem)}


def _bad_ops(p: ReplayParams, layers: list[int], positions: list[int]) -> list[ReplayOp]:
    ops = []
    for layer, pos in zip(layers, positions, strict=True):
        ops.append(ReplayOp(False, layer, pos))
        ops.append(ReplayOp(True, layer, pos, np.full(p.words, 5)))
    return ops


def test_replay_refuses_layer_and_position_out_of_range() -> None:
    p = ReplayParams(layers=3, tokens_per_frame=5, words=9, word_bits=8, port_bits=32, addr_bits=12, base=7)
    rng = np.random.default_rng(11)
    good = decode_walk(p, frames=2, replay_prob=0.5, rng=rng)
    bad = _bad_ops(p, [3, 0, 3, 2], [0, 5, 7, 6])  # ports are 2 and 3 bits wide
    jobs = bad[:2] + good[:10] + bad + good[10:] + bad[2:]
    res = simulate(GuardedReplay(p, jobs))
    plain = ReplayBench(p, good)
    ref = check(plain)
    assert ref.ok
    is_bad = [op.layer >= p.layers or op.position >= p.tokens_per_frame for op in jobs]
    assert [lat for lat, b in zip(res.latencies, is_bad, strict=True) if b] == [1] * sum(is_bad)
    assert [lat for lat, b in zip(res.latencies, is_bad, strict=True) if not b] == ref.rtl_cycles
    assert res.outputs["errs"] == is_bad
    good_res = simulate(GuardedReplay(p, good))
    assert res.outputs["reads"] == good_res.outputs["reads"] == plain.reference()["reads"]
    assert res.outputs["addresses"] == good_res.outputs["addresses"]
    assert res.outputs["mem"] == good_res.outputs["mem"]  # no refused write reached the cache memory


def test_replay_guard_follows_the_port_width() -> None:
    """LAYERS a power of two: the 2-bit port cannot carry a bad layer (no comparator is built); driven
    3 bits wide, layer 4 is refused."""
    p = ReplayParams(layers=4, tokens_per_frame=4, words=4, word_bits=8, port_bits=32, addr_bits=8)
    good = decode_walk(p, frames=1, replay_prob=0.0, rng=np.random.default_rng(1))[:3]
    GuardedReplay.layer_bits = 3
    try:
        res = simulate(GuardedReplay(p, [*_bad_ops(p, [4], [0]), *good]))
    finally:
        GuardedReplay.layer_bits = None
    assert res.outputs["errs"] == [True, True, False, False, False]
    assert res.latencies[:2] == [1, 1]


def test_replay_address_width_is_checked_at_elaboration() -> None:
    p = ReplayParams(layers=4, tokens_per_frame=4, words=4, word_bits=8, port_bits=32, addr_bits=3)
    with pytest.raises(ValueError, match="address 15 does not fit ADDR_BITS=3"):
        simulate(ReplayBench(p, []))


@pytest.mark.hdl
def test_refused_starts_on_the_converted_verilog(tools) -> None:
    """The converted Verilog under Icarus refuses the same starts on the same edges as MyHDL."""
    tools("iverilog", "iverilog-vpi", "vvp")
    p = GemvParams(lanes=2, max_cols=8, row_bits=4)
    good = _gemv_jobs(np.random.default_rng(3), p, [(3, 8), (2, 5)])
    bench = GuardedGemv(p, _mixed(good, [BadGemv(3, 0), BadGemv(3, 9), BadGemv(0, 4)]))
    a, b = simulate(bench, "myhdl"), simulate(bench, "icarus")
    assert a.latencies == b.latencies and a.outputs == b.outputs
    assert sum(a.outputs["errs"]) == 9
