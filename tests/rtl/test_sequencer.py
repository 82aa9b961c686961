"""The RTL sequencer against the event model's dispatcher, record by record and cycle by cycle.

The sequencer runs a layer's compiled stream while its engines take and finish records at the cycles the
event model's engines did (``accelerator.machine.layer_trace``). Everything the sequencer decides itself
is compared: which queue each record enters, with which entries (the filter and the DRS routing), at which
cycle (issue time, back-pressure of full queues, waits for the index bits, DRS, SYNC), and when SYNC lets
the layer end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny_workload import TINY  # noqa: E402

from accelerator.rtl.sequencer import check_layer  # noqa: E402
from cosim.config import resolve  # noqa: E402
from cosim.simulate import make_job  # noqa: E402

CASES = {
    "2 cores, DRS": ["hardware.cores=2"],
    "3 cores, queue depth 1": ["hardware.cores=3", "hardware.queue_depth=1"],
    "static mapping": ["hardware.cores=2", "scheduler.drs=false"],
    "1 core, queue depth 2": ["hardware.cores=1", "hardware.queue_depth=2"],
    "batch 6, one-tile buffers": [
        "hardware.cores=2",
        "video.prompts=3",
        "hardware.queue_depth=1",
        "hardware.weight_buffer_KiB=1",
    ],
}


def _job(sets, seed=1, overhead=0):
    w = resolve(TINY, [*sets, f"scheduler.overhead_cycles={overhead}"])
    v = w.video
    replay = np.random.default_rng(seed).random((v.batch, w.model.layers, v.steps)) < 0.5
    replay[:, :, : v.tokens_per_frame] = False
    return w, make_job(w, replay)


@pytest.mark.parametrize("name", list(CASES))
def test_sequencer_puts_every_record_when_the_event_model_does(name):
    w, job = _job(CASES[name])
    v = w.video
    for step in (0, v.tokens_per_frame, v.steps - 1):  # frame 0 (index preset), frame 1, the last step
        r = check_layer(job, step, 2)
        assert r["got"] == r["expected"], (name, step)
        assert r["rtl_cycles"] == r["cycles"], (name, step)
        assert len(r["got"]) >= 9


def test_the_check_sees_a_different_queue_depth():
    # The event model with queue depth 1 against a sequencer built with 4 places: the dispatcher is
    # held back in one and not the other, so records enter at other cycles.
    _, job = _job(CASES["3 cores, queue depth 1"])
    r = check_layer(job, job.tokens_per_frame, 2, queue_depth=4)
    assert r["got"] != r["expected"]


def test_an_assumed_drs_overhead_is_not_what_the_sequencer_does():
    # DRS on the sequencer takes the scan and commit of drs_assign_cycles and its issue cycle, nothing
    # more: an event model that assumes 100 cycles of overhead puts everything after DRS 100 cycles later
    # (the engines here replay the event model's own completions, so only the puts can differ).
    _, job = _job(CASES["2 cores, DRS"], overhead=100)
    r = check_layer(job, job.tokens_per_frame, 2)
    late = [(e[0] - g[0]) for e, g in zip(r["expected"], r["got"], strict=True) if e != g]
    assert late and set(late) == {100}
