"""DRS against the static batch-to-core mapping on crafted replay patterns, where the gain is computable."""

import numpy as np
import pytest
from tiny_workload import compute_bound

from accelerator.cost import CostModel, drs_assign_cycles
from accelerator.drs import filter_instructions, index_register, mapping_registers
from cosim.config import resolve
from cosim.simulate import execute, make_job


def crafted(w, pattern):
    """Replay entries where ``pattern`` (per batch entry) is True, in every layer from frame 1 on."""
    v = w.video
    replay = np.zeros((v.batch, w.model.layers, v.steps), dtype=bool)
    replay[np.asarray(pattern), :, v.tokens_per_frame :] = True
    return replay


@pytest.mark.parametrize("mode", ["event", "analytic"])
def test_drs_wins_by_the_computable_amount_on_an_imbalanced_pattern(tiny_raw, mode):
    # Batch 4 on 2 cores: static mapping puts entries 0, 2 on core 0 and 1, 3 on core 1. Entries 1 and 3
    # replay, so statically core 0 runs two MLPs while core 1 idles; DRS gives each core one MLP, paying
    # its scheduling event (register scan + control overhead) instead.
    w = resolve(compute_bound(tiny_raw), ["hardware.cores=2"])
    replay = crafted(w, [False, True, False, True])
    cost = CostModel(w.hardware, w.model)
    w_static = resolve(compute_bound(tiny_raw), ["hardware.cores=2", "scheduler.drs=false"])
    with_drs = execute(make_job(w, replay), mode)
    static = execute(make_job(w_static, replay), mode)
    scheduled_steps = (w.video.frames - 1) * w.video.tokens_per_frame * w.model.layers
    drs_cycles = drs_assign_cycles(4) + w.scheduler.overhead_cycles
    expected_gain = scheduled_steps * (cost.mlp_cycles - drs_cycles) / w.hardware.clock_Hz
    assert static.latency_s - with_drs.latency_s == pytest.approx(expected_gain, rel=1e-9)
    assert with_drs.drs_events == scheduled_steps and static.drs_events == 0


@pytest.mark.parametrize("mode", ["event", "analytic"])
def test_drs_only_costs_when_the_static_mapping_is_already_balanced(tiny_raw, mode):
    w = resolve(compute_bound(tiny_raw), ["hardware.cores=2"])
    replay = crafted(w, [False, False, True, True])  # one replay per core: nothing to rebalance
    w_static = resolve(compute_bound(tiny_raw), ["hardware.cores=2", "scheduler.drs=false"])
    gain = execute(make_job(w_static, replay), mode).latency_s - execute(make_job(w, replay), mode).latency_s
    scheduled_steps = (w.video.frames - 1) * w.video.tokens_per_frame * w.model.layers
    overhead = scheduled_steps * (drs_assign_cycles(4) + w.scheduler.overhead_cycles) / w.hardware.clock_Hz
    assert gain == pytest.approx(-overhead, rel=1e-9)


def test_registers_and_instruction_filter():
    compute = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    index = index_register(compute)
    assert index == 0b101101
    mapping = mapping_registers(index, batch=6, cores=2)
    assert mapping == [0, -1, 1, 0, -1, 1]
    stream = [(e, op) for op in range(2) for e in range(6)]
    out = list(filter_instructions(stream, mapping))
    assert [e for _, e, _ in out] == [0, 2, 3, 5, 0, 2, 3, 5]  # replayed entries' instructions dropped
    assert {e: c for c, e, _ in out} == {0: 0, 2: 1, 3: 0, 5: 1}
    with pytest.raises(ValueError, match="at most 32"):
        index_register(np.ones(33, dtype=bool))
