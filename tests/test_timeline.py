"""timeline.json: by default it shows the first decode steps of frame 1, where FastCar works."""

from __future__ import annotations

import pytest
from tiny_workload import TINY

from cosim import api
from cosim.config import WorkloadError


def _spans(timeline: dict) -> list[dict]:
    return [e for e in timeline["traceEvents"] if e["ph"] == "X"]


def _threads(timeline: dict) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in timeline["traceEvents"] if e["name"] == "thread_name"}


@pytest.mark.parametrize("granularity", ["phase", "instruction"])
def test_the_default_timeline_of_a_fastcar_run_shows_tas_and_drs(granularity):
    w = api.load(TINY, {"simulation.granularity": granularity, "outputs.timeline_steps": 2})
    assert w.outputs.timeline_start is None and w.video.tokens_per_frame == 16
    tl = api.run(w).timeline
    names = set(_threads(tl).values())
    assert {"tas", "drs"} <= names, names
    busy = {_threads(tl)[e["tid"]] for e in _spans(tl)}
    assert {"tas", "drs"} <= busy  # tracks with spans on them, not only named
    if granularity == "phase":  # spans say where in the decode they are
        steps = {e["args"]["step"] for e in _spans(tl)}
        assert steps == {16, 17}
        assert {e["args"]["frame"] for e in _spans(tl)} == {1}
        assert {e["args"]["layer"] for e in _spans(tl)} == set(range(w.model.layers))


def test_frame_0_alone_shows_neither():
    tl = api.run(api.load(TINY, {"outputs.timeline_start": 0, "outputs.timeline_steps": 2})).timeline
    busy = {_threads(tl)[e["tid"]] for e in _spans(tl)}
    assert "tas" not in busy and "drs" not in busy


def test_the_window_moves_the_spans_not_the_results():
    runs = {
        k: api.run(api.load(TINY, o))
        for k, o in {
            "off": {"outputs.timeline_steps": 0},
            "default": {},
            "late": {"outputs.timeline_start": 40, "outputs.timeline_steps": 3},
        }.items()
    }
    assert runs["off"].timeline is None
    for k in ("default", "late"):
        assert runs[k].summary == runs["off"].summary  # to every digit
    late = _spans(runs["late"].timeline)
    assert {e["args"]["step"] for e in late} == {40, 41, 42}
    # absolute times: the window starts after 40 steps' worth of decode
    assert min(e["ts"] for e in late) > min(e["ts"] for e in _spans(runs["default"].timeline))


def test_a_window_past_the_last_step_is_refused():
    with pytest.raises(WorkloadError, match="outputs.timeline_start: 64 is past the last decode step"):
        api.load(TINY, {"outputs.timeline_start": 64})
