"""Cost model against hand computation on the tiny preset (hidden 64, 4 heads / 2 KV heads of 16, MLP 176)
on the KV260 preset (64 lanes per core, pipeline 3, TAS lanes 16, 4-bit weights, 16-bit KV and cache)."""

import numpy as np
import pytest

from accelerator.cost import (
    CostModel,
    drs_assign_cycles,
    drs_core_counts,
    drs_mapping,
    gemv_cycles,
    replay_transfer_cycles,
    static_core_counts,
    tas_cycles,
)
from cosim.config import resolve


@pytest.fixture
def cost(tiny_raw):
    w = resolve(tiny_raw)
    return CostModel(w.hardware, w.model)


def test_primitives_by_hand():
    assert gemv_cycles(1024, 512, 256, 3) == 4 * 512 + 3
    assert gemv_cycles(100, 7, 64, 0) == 2 * 7  # a partial tile costs a whole tile
    assert tas_cycles(32, 128, 16) == 32 * 8 + 4 + 3  # 8 beats per head, 4-stage adder tree, 3 tail stages
    assert tas_cycles(4, 16, 1) == 4 * 16 + 0 + 3
    assert drs_assign_cycles(10) == 11
    assert replay_transfer_cycles(4096, 16, 512) == 128 + 2


def test_phase_cycles_by_hand(cost):
    assert cost.qkv_cycles == 2 * 64 + 3  # rows 64 + 2*32 = 128 -> 2 tiles of 64 cols
    assert cost.o_cycles == 64 + 3
    assert cost.mlp_cycles == (6 * 64 + 3) + (176 + 3)  # gate+up: 352 rows; down: 64 rows x 176 cols
    # Per head on the broadcast tile: scores (10 keys on 64 lanes, 16 dims) 16 + 3 = 19; values (16 dims on
    # 64 lanes, 10 keys, weights straight from the softmax unit) 10 + 3 = 13. A head's outputs drain from
    # max(13, 10 keys + 27 reciprocal cycles) = 37 after its values start, 16 outputs at 1 per cycle + 2
    # writer stages: 55. The next head's values wait for that drain (55 > its scores 19 + values 13), and
    # the instruction ends with the last head's drain: 19 + 3 x 55 + 55 = 239. Then O: 64 + 3.
    assert cost.attention_cycles(10) == 19 + 3 * 55 + 55 + 67
    assert cost.tas_unit_cycles == 4 + 4 + 3
    assert cost.replay_unit_cycles == 2 + 2


def test_one_input_buffer_serialises_every_input_write(tiny_raw):
    w = resolve(tiny_raw, ["hardware.input_buffers=1"])
    cost = CostModel(w.hardware, w.model)
    assert cost.qkv_cycles == 2 * 64 + 3 + 64  # the 64-element input written first
    assert cost.mlp_cycles == (6 * 64 + 3 + 64) + (176 + 3 + 176)
    # attention writes no input buffer (the softmax unit feeds the values; O reads its input where the
    # heads wrote it, after the attention instruction): unchanged
    assert cost.attention_cycles(10) == 19 + 3 * 55 + 55 + 67


def test_weight_blocks_fill_one_buffer_of_whole_tiles(tiny_raw):
    # A 64-lane tile of qkv is 64 rows x 64 cols x 4 bits = 2 KiB; a 1 KiB buffer still takes one tile.
    w = resolve(tiny_raw, ["hardware.weight_buffer_KiB=1"])
    cost = CostModel(w.hardware, w.model)
    assert cost.blocks["qkv"] == [64, 64] and cost.qkv_cycles == 2 * (64 + 3)
    w = resolve(tiny_raw, ["hardware.weight_buffer_KiB=5"])  # two whole tiles (4 KiB) fit 5 KiB
    assert CostModel(w.hardware, w.model).blocks["up"] == [128, 128, 96]


def test_bytes_by_hand(cost):
    assert cost.qkv(1).bytes == {"ddr4": 64 * 128 * 0.5}
    assert cost.mlp(3).bytes["ddr4"] == 3 * 64 * 176 * 0.5  # shared across the batch: once per core
    cost.hw.weights_shared_across_batch = False
    assert cost.mlp(3).bytes["ddr4"] == 3 * 3 * 64 * 176 * 0.5
    assert cost.kv_bytes_per_entry(10) == 2 * 32 * 2 * 11  # K and V of 10 keys read, this token's written
    assert cost.replay(2, 1).bytes["ddr4"] == 3 * 64 * 2


def test_sparse_attention_caps_attended_tokens(tiny_raw):
    w = resolve(tiny_raw)
    sparse = CostModel(w.hardware, w.model, sparse_sink_tokens=2, sparse_window=4)
    assert sparse.attended(3) == 3 and sparse.attended(100) == 6
    assert sparse.kv_bytes_per_entry(100) == 2 * 32 * 2 * 7
    assert sparse.attention_macs(100) < CostModel(w.hardware, w.model).attention_macs(100)


def test_precision_changes_bytes(tiny_raw):
    lo = resolve(tiny_raw, ["hardware.precision.weights_bits=4"])
    hi = resolve(tiny_raw, ["hardware.precision.weights_bits=16"])
    assert (
        CostModel(hi.hardware, hi.model).mlp_weight_bytes
        == 4 * CostModel(lo.hardware, lo.model).mlp_weight_bytes
    )


def test_roofline_picks_the_slower_side(cost):
    d = cost.mlp(1)
    compute = d.cycles / cost.hw.clock_Hz
    memory = d.bytes["ddr4"] / (19.2e9 * 0.85)
    assert cost.roofline_seconds(d) == pytest.approx(max(compute, memory))


def test_core_mappings():
    active = np.array([1, 0, 1, 0, 1, 1, 0], dtype=bool)
    assert static_core_counts(active, 2).tolist() == [3, 1]  # entries 0,2,4,6 / 1,3,5
    assert drs_core_counts(active, 2).tolist() == [2, 2]
    assert drs_mapping(active, 3).tolist() == [0, -1, 1, -1, 2, 0, -1]


def test_energy_is_static_power_times_time_without_dynamic_terms(tiny_raw):
    w = resolve(
        tiny_raw,
        [
            "hardware.power.mac_energy_pJ=0",
            "hardware.power.tas_energy_pJ=0",
            "hardware.memory.ddr4.energy_pJ_per_byte=0",
            "hardware.power.core_static_W=0.5",
        ],
    )
    parts = CostModel(w.hardware, w.model).energy_breakdown_j(2.0, 1e12, 1e9, {"ddr4": 1e12})
    assert sum(parts.values()) == pytest.approx((w.hardware.power.static_W + 2 * 0.5) * 2.0)


def test_energy_breakdown_by_hand(tiny_raw):
    w = resolve(tiny_raw, ["hardware.memory.ddr4.static_W=0.25"])
    parts = CostModel(w.hardware, w.model).energy_breakdown_j(4.0, 1e12, 2e9, {"ddr4": 1e9})
    assert parts["cores_dynamic"] == pytest.approx(1e12 * 0.8e-12)
    assert parts["tas_dynamic"] == pytest.approx(2e9 * 0.8e-12)
    assert parts["memory_ddr4_dynamic"] == pytest.approx(1e9 * 120e-12)
    assert parts["memory_ddr4_static"] == pytest.approx(1.0)
    assert parts["board_static"] == pytest.approx(4.0 * 4.0)
