"""The top level's data path: the fixed-point layer, and the converted RTL computing it bit for bit.

The reference (``accelerator.rtl.layer_numerics``) is checked against independent arithmetic (float
attention, the rounding identity the writer uses, the beat packing read back); the RTL runs the reduced
layer under Verilator and every tensor it writes must equal the reference, and a wrong shift register or a
writer that cannot keep up must be seen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny_workload import TINY  # noqa: E402

from accelerator.rtl import top_bench  # noqa: E402
from accelerator.rtl.layer_numerics import (  # noqa: E402
    EXP_STEPS,
    Numerics,
    attention,
    gemv,
    layer_data,
    reference,
    rs,
)
from cosim.config import resolve  # noqa: E402
from cosim.simulate import make_job  # noqa: E402

#: 16 GB/s x 0.8 at 200 MHz = 64 bytes per cycle; 100 ns = 20 cycles; first come first served.
WHOLE_CYCLES = [
    "scheduler.overhead_cycles=0",
    "hardware.memory.ddr4.arbitration=fifo",
    "hardware.memory.ddr4.bandwidth_GBps=16",
    "hardware.memory.ddr4.efficiency=0.8",
    "hardware.cores=2",
]


def _job(*sets, seed=3):
    w = resolve(TINY, [*WHOLE_CYCLES, *sets])
    v = w.video
    replay = np.random.default_rng(seed).random((v.batch, w.model.layers, v.steps)) < 0.5
    replay[:, :, : v.tokens_per_frame] = False
    return w, make_job(w, replay)


def test_rounding_shift_identity_the_writer_uses():
    """The writer computes rs(v, s) = (v + 2^(s-1)) >> s as ((v >> (s-1)) + 1) >> 1."""
    rng = np.random.default_rng(0)
    v = rng.integers(-(1 << 40), 1 << 40, size=20000)
    for s in range(1, 30):
        assert np.array_equal(((v >> (s - 1)) + 1) >> 1, rs(v, s))


def test_gemv_is_exact_at_the_paper_widths():
    """float64 BLAS must equal integer arithmetic for int4 x int16 over 11,008 columns."""
    rng = np.random.default_rng(1)
    w = rng.integers(-7, 8, size=(64, 11008), dtype=np.int8)
    x = rng.integers(-(1 << 15), 1 << 15, size=(11008, 3))
    exact = np.array(
        [[int(np.dot(w[r].astype(object), x[:, b].astype(object))) for b in range(3)] for r in range(64)]
    )
    assert np.array_equal(gemv(w, x), exact)


def test_fixed_point_attention_follows_float_softmax():
    """The integer softmax (EXP table after subtracting the max, reciprocal of the sum) approximates the
    float softmax of the same temperature, 2^(-(m - s) / (16 * 2^s_score)): the index truncates the exponent
    to whole 1/16 steps, so each weight is off by at most a factor 2^(1/16) (4.4%); with the outputs'
    rounding, every output is within 0.5 LSB + 5% of the largest value of V."""
    w, job = _job()
    num = Numerics.for_job(job)
    d = job.cost.dims
    n = 40
    data = layer_data(job, 2, 20, n, 0)
    q = np.random.default_rng(2).integers(-(1 << 11), 1 << 11, size=d.q_dim)
    keys, values = data.keys[0], data.values[0]
    got = attention(q, keys, values, d.heads, d.kv_heads, d.head_dim, num)
    group = d.heads // d.kv_heads
    spread = []
    for h in range(d.heads):
        g = h // group
        s = keys[:, g * d.head_dim : (g + 1) * d.head_dim] @ q[h * d.head_dim : (h + 1) * d.head_dim]
        p = 2.0 ** (-(s.max() - s) / (EXP_STEPS * 2.0**num.s_score))
        spread.append(p.min())
        v = values[:, g * d.head_dim : (g + 1) * d.head_dim]
        expect = (p @ v) / p.sum() * 2.0**num.s_value
        err = np.abs(got[h * d.head_dim : (h + 1) * d.head_dim] - expect)
        assert err.max() <= 0.5 + 0.05 * np.abs(v).max() * 2.0**num.s_value, (h, err.max())
    # the temperature makes the weights differ (not a plain mean, not a single key)
    assert 1e-4 < min(spread) < 0.5


def test_reference_keeps_activations_in_range_at_the_paper_size():
    """The shifts chosen from the dimensions keep every activation away from saturation (else an equal
    comparison would mostly compare saturated values)."""
    from cosim.config import load_workload
    from cosim.traces import load_trace

    w = load_workload("workloads/fastcar_vilau7b_u280.yaml")
    job = make_job(w, load_trace(w).trace.replay_cube())
    step = 1000
    keys = int(job.cost.attended(job.context()[step]))
    num = Numerics.for_job(job)
    ref = reference(job, layer_data(job, 15, step, keys, 0), num, np.ones(job.batch, dtype=bool))
    top = (1 << (num.act_bits - 1)) - 1
    for name in ("qkv", "att", "h", "gu", "a", "d", "y"):
        v = ref[name]
        assert np.mean(np.abs(v) >= top) < 0.01, name
        assert v.std() > 2 ** (num.act_bits - 8), name


@pytest.mark.parametrize("bits, lanes", [(4, 64), (8, 16), (4, 6), (16, 3)])
def test_weight_beats_read_back_as_the_tile_reads_them(bits, lanes):
    from dataclasses import replace

    _, job = _job()
    P = replace(top_bench.top_params(job, 16), lanes=lanes, w_bits=bits)
    rng = np.random.default_rng(4)
    top = (1 << (bits - 1)) - 1
    w = rng.integers(-top, top + 1, size=(50, 7))
    row0, rows = 5, 40
    beats = top_bench.weight_beats(w, row0, rows, P)
    tiles = -(-rows // lanes)
    assert beats.shape == (tiles * 7, -(-lanes * bits // 32))
    for t in range(tiles):
        for c in range(7):
            word = int.from_bytes(beats[t * 7 + c].tobytes(), "little")
            for r in range(lanes):
                v = word >> (r * bits) & ((1 << bits) - 1)
                v = v - (1 << bits) if v >> (bits - 1) else v
                row = t * lanes + r
                assert v == (w[row0 + row, c] if row < rows else 0), (t, c, r)


def _run(job, step, layer=2):
    return top_bench.run_layer(job, step, layer, simulator="verilator", seed=0)


@pytest.mark.hdl
def test_reduced_layer_outputs_equal_the_reference(tools):
    tools("verilator")
    w, job = _job()
    step = w.video.tokens_per_frame + 3
    r = _run(job, step)
    assert r["rtl_cycles"] == r["cycles"]
    out = r["outputs"]
    assert out["overrun"] is None
    computing = int(job.compute[:, 2, step].sum())
    assert 0 < computing < job.batch  # both kinds of entries in this layer-step
    for name, (n, bad) in out["tensors"].items():
        assert n > 0 and bad == 0, (name, n, bad)
    # the MLP's tensors for the computing entries; d, y and the replay cache for every entry (the
    # replayed ones through the replay-cache controller)
    assert out["tensors"]["a"][0] == computing * job.cost.dims.mlp_hidden
    assert out["tensors"]["y"][0] == out["tensors"]["cache"][0] == job.batch * job.cost.dims.hidden


@pytest.mark.hdl
def test_a_wrong_up_shift_shows_in_the_mlp_outputs_only(tools, monkeypatch):
    tools("verilator")
    w, job = _job()
    real = top_bench.data_registers

    def off_by_one(num):
        regs = real(num)
        regs["shifts"] += 1 << (2 * 6)  # the up projection's shift (matrix 2), one more
        return regs

    monkeypatch.setattr(top_bench, "data_registers", off_by_one)
    out = _run(job, w.video.tokens_per_frame + 3)["outputs"]["tensors"]
    assert out["qkv"][1] == 0 and out["h"][1] == 0
    for name in ("g", "a"):
        assert out[name][1] > out[name][0] // 2, (name, out[name])
    # d, y and the cache are wrong exactly for the computing entries (the replayed ones take the cache's)
    hidden, computing = job.cost.dims.hidden, int(job.compute[:, 2, w.video.tokens_per_frame + 3].sum())
    for name in ("d", "y", "cache"):
        assert computing * hidden // 2 < out[name][1] <= computing * hidden, (name, out[name])


@pytest.mark.hdl
def test_a_writer_slower_than_the_tiles_is_reported(tools):
    """128 lanes drain in 128 cycles at one element per cycle, but a 64-column tile takes 64: the second
    tile of a matrix arrives while the first is draining."""
    tools("verilator")
    w, job = _job("hardware.lanes_per_core=128")
    r = _run(job, w.video.tokens_per_frame + 3)
    assert r["outputs"]["overrun"] is not None
