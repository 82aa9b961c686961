"""The integrated top level against the event model: one layer-step, cycle by cycle.

Each case elaborates the top level (sequencer, cores with their GEMV tiles and stream engines, the TAS
unit, the replay-cache controller, the DRS twin) for a small machine and runs one layer of one decode
step against a memory model whose rates and latency are whole numbers of cycles; the finish cycle of
every record and the layer's cycles must equal the event model's (``accelerator.machine.layer_trace``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny_workload import TINY  # noqa: E402

from accelerator.rtl.top_bench import TopError, run_layer  # noqa: E402
from cosim.config import resolve  # noqa: E402
from cosim.simulate import make_job  # noqa: E402

#: 16 GB/s x 0.8 at 200 MHz = 64 bytes per cycle, one burst; 100 ns = 20 cycles.
WHOLE_CYCLES = [
    "scheduler.overhead_cycles=0",
    "hardware.memory.ddr4.arbitration=fifo",
    "hardware.memory.ddr4.bandwidth_GBps=16",
    "hardware.memory.ddr4.efficiency=0.8",
]
CASES = {
    "2 cores, DRS": ["hardware.cores=2"],
    "3 cores, queue depth 1": ["hardware.cores=3", "hardware.queue_depth=1"],
    "static mapping": ["hardware.cores=2", "scheduler.drs=false"],
    "1 core, one operand buffer": ["hardware.cores=1", "hardware.weight_buffers=1"],
    "batch 6, one-tile buffers, slow memory": [
        "hardware.cores=2",
        "video.prompts=3",
        "hardware.weight_buffer_KiB=1",
        "hardware.memory.ddr4.bandwidth_GBps=4",  # 16 bytes per cycle: a burst takes 4 cycles
        "hardware.memory.ddr4.efficiency=0.8",
    ],
}


def _job(sets, seed=1):
    w = resolve(TINY, [*WHOLE_CYCLES, *sets])
    v = w.video
    replay = np.random.default_rng(seed).random((v.batch, w.model.layers, v.steps)) < 0.5
    replay[:, :, : v.tokens_per_frame] = False
    return w, make_job(w, replay)


@pytest.mark.parametrize("name", list(CASES))
def test_top_level_runs_a_layer_in_the_event_models_cycles(name):
    # Every machine at the first step of frame 1 (TAS, DRS, replay); the first one also in frame 0 (index
    # preset, no TAS) and at the last step (longest context). The MyHDL simulation runs ~400 cycles/s.
    w, job = _job(CASES[name])
    v = w.video
    steps = (0, v.tokens_per_frame, v.steps - 1) if name == next(iter(CASES)) else (v.tokens_per_frame,)
    for step in steps:
        r = run_layer(job, step, 1)
        assert r["rtl_ends"] == r["expected_ends"], (name, step)
        assert r["rtl_cycles"] == r["cycles"], (name, step)


def test_the_check_sees_a_deeper_pe_pipeline():
    # An RTL tile with one more product register than the spec says: every GEMV and attention job takes
    # a cycle more, and the layer no longer matches.
    from accelerator.rtl import top_bench

    w, job = _job(CASES["2 cores, DRS"])
    original = top_bench.top_params

    def deeper(job, step):
        p = original(job, step)
        return type(p)(**{**p.__dict__, "pipeline_cycles": p.pipeline_cycles + 1})

    top_bench.top_params = deeper
    try:
        r = run_layer(job, w.video.tokens_per_frame, 1)
    finally:
        top_bench.top_params = original
    assert r["rtl_cycles"] > r["cycles"]


def test_a_layer_with_an_exposed_gemv_input_write_is_refused():
    w = resolve(TINY, [*WHOLE_CYCLES, "hardware.cores=2", "hardware.input_buffers=1"])
    job = make_job(w, None)
    with pytest.raises(TopError, match="exposed input-buffer write"):
        run_layer(job, 0, 0)
