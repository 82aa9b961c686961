"""DRS against the static batch-to-core mapping on crafted replay patterns, where the gain is computable."""

import numpy as np
import pytest
from tiny_workload import compute_bound

from accelerator.cost import REPLAY_PREFETCH_CYCLES, TAS_PREFETCH_CYCLES, CostModel, drs_assign_cycles
from accelerator.drs import filter_instructions, index_register, mapping_registers
from cosim.config import resolve
from cosim.simulate import execute, make_job


def crafted(w, pattern):
    """Replay entries where ``pattern`` (per batch entry) is True, in every layer from frame 1 on."""
    v = w.video
    replay = np.zeros((v.batch, w.model.layers, v.steps), dtype=bool)
    replay[np.asarray(pattern), :, v.tokens_per_frame :] = True
    return replay


MODES = [("event", "phase"), ("event", "instruction"), ("analytic", "phase")]


@pytest.mark.parametrize("mode,granularity", MODES)
def test_drs_wins_by_the_computable_amount_on_an_imbalanced_pattern(tiny_raw, mode, granularity):
    # Batch 4 on 2 cores: static mapping puts entries 0, 2 on core 0 and 1, 3 on core 1. Entries 1 and 3
    # replay, so statically core 0 runs two MLPs while core 1 idles; DRS gives each core one MLP. DRS
    # waits only for the TAS bits, which are in long before attention ends (below), so its scheduling
    # event is hidden and the gain is one whole MLP per scheduled layer-step.
    w = resolve(compute_bound(tiny_raw), ["hardware.cores=2"])
    replay = crafted(w, [False, True, False, True])
    cost = CostModel(w.hardware, w.model)
    w_static = resolve(compute_bound(tiny_raw), ["hardware.cores=2", "scheduler.drs=false"])
    with_drs = execute(make_job(w, replay), mode, granularity=granularity)
    static = execute(make_job(w_static, replay), mode, granularity=granularity)
    scheduled_steps = (w.video.frames - 1) * w.video.tokens_per_frame * w.model.layers
    expected_gain = scheduled_steps * cost.mlp_cycles / w.hardware.clock_Hz
    assert static.latency_s - with_drs.latency_s == pytest.approx(expected_gain, rel=1e-9)
    assert with_drs.drs_events == scheduled_steps and static.drs_events == 0


@pytest.mark.parametrize("mode,granularity", MODES)
def test_drs_costs_only_what_outlasts_attention_on_a_balanced_pattern(tiny_raw, mode, granularity):
    raw = compute_bound(tiny_raw)
    replay_pattern = [False, False, True, True]  # one replay per core: nothing to rebalance
    for overhead, exposed in ((100, False), (20000, True)):
        sets = ["hardware.cores=2", f"scheduler.overhead_cycles={overhead}"]
        w = resolve(raw, sets)
        w_static = resolve(raw, sets + ["scheduler.drs=false"])
        replay = crafted(w, replay_pattern)
        cost = CostModel(w.hardware, w.model, drs_overhead_cycles=overhead)
        cost_s = (
            execute(make_job(w, replay), mode, granularity=granularity).latency_s
            - execute(make_job(w_static, replay), mode, granularity=granularity).latency_s
        )
        # Per scheduled layer: both cores finish QKV together; the TAS unit then scores core 0's two
        # entries and core 1's two (each instruction first reads its first query beat); DRS scans 4 bits
        # plus the overhead. Attention (two entries per core)
        # (and the O projection's output drain) ends attention(2 entries) after QKV. DRS costs what it
        # outlasts attention by.
        ctx = w.video.prompt_tokens + np.arange(w.video.steps) + 1
        excess = [
            2 * TAS_PREFETCH_CYCLES
            + 4 * cost.tas_unit_cycles
            + drs_assign_cycles(4)
            + overhead
            - cost.attention(2, int(c)).cycles
            for c in ctx[w.video.tokens_per_frame :]
        ]
        # DRS also stores the two computed outputs with one replay-write instruction where the static
        # mapping issues one per core: one prefetch cycle less at the end of every scheduled layer.
        saved = len(excess) * w.model.layers * REPLAY_PREFETCH_CYCLES / w.hardware.clock_Hz
        if not exposed:
            assert max(excess) < 0
            assert cost_s == pytest.approx(-saved, abs=1e-12)
        else:
            assert min(excess) > 0
            assert cost_s == pytest.approx(
                (sum(excess) * w.model.layers) / w.hardware.clock_Hz - saved, rel=1e-9
            )


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
