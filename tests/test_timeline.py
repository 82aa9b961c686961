"""timeline.json: by default it shows the first decode steps of frame 1, where FastCar works."""

from __future__ import annotations

import json
import math

import pytest
from tiny_workload import TINY

from accelerator.timeline import Timeline
from cosim import api
from cosim.config import WorkloadError


def _spans(timeline: dict) -> list[dict]:
    return [e for e in timeline["traceEvents"] if e["ph"] == "X"]


def _counters(timeline: dict) -> list[dict]:
    return [e for e in timeline["traceEvents"] if e["ph"] == "C"]


def _threads(timeline: dict) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in timeline["traceEvents"] if e["name"] == "thread_name"}


@pytest.mark.parametrize("granularity", ["phase", "instruction"])
def test_the_default_timeline_of_a_fastcar_run_shows_tas_drs_and_the_replay_cache(granularity):
    w = api.load(TINY, {"simulation.granularity": granularity, "outputs.timeline_steps": 2})
    assert w.outputs.timeline_start is None and w.video.tokens_per_frame == 16
    assert w.policy.kind == "tas" and w.scheduler.drs
    tl = api.run(w).timeline
    names = set(_threads(tl).values())
    assert {"tas", "drs", "replay_cache"} <= names, names
    busy = {_threads(tl)[e["tid"]] for e in _spans(tl)}
    assert {"tas", "drs", "replay_cache"} <= busy  # tracks with spans on them, not only named
    # spans say where in the decode they are, at both granularities
    assert {e["args"]["step"] for e in _spans(tl)} == {16, 17}
    assert {e["args"]["frame"] for e in _spans(tl)} == {1}
    assert {e["args"]["layer"] for e in _spans(tl)} == set(range(w.model.layers))
    # and the counters that show the replay cache at work
    assert {"tas queue", "replay_cache hits"} <= {e["name"] for e in _counters(tl)}


def test_instruction_spans_name_the_batch_entries_they_serve():
    """At instruction granularity a span is one instruction (or one transfer of it): its args say where in
    the decode it runs and which batch entries it serves, and those entries are the ones it really served
    (a QKV block serves its core's static group; the cache reads only the entries TAS replays)."""
    w = api.load(
        TINY,
        {
            "simulation.granularity": "instruction",
            "outputs.timeline_steps": 2,
            "model.extra_macs_per_token": 1e6,
        },
    )
    batch, cores = w.video.batch, w.hardware.cores
    tl = api.run(w).timeline
    threads = _threads(tl)
    spans = [e for e in _spans(tl) if threads[e["tid"]] != "drs"]
    assert spans and all(set(e["args"]) >= {"step", "frame", "entries"} for e in spans)
    for e in spans:
        assert e["args"]["step"] in (16, 17) and e["args"]["frame"] == 1
        assert e["args"]["entries"] and set(e["args"]["entries"]) <= set(range(batch)), e
    qkv = [e for e in spans if e["name"].startswith("qkv[") and threads[e["tid"]].startswith("core")]
    for e in qkv:  # core c's QKV serves the entries e with e % cores == c
        core = int(threads[e["tid"]].removeprefix("core"))
        assert e["args"]["entries"] == [x for x in range(batch) if x % cores == core], e
    extra = [e for e in spans if e["name"] == "extra"]
    assert extra and all("layer" not in e["args"] for e in extra)  # a step's work outside its layers
    layered = [e for e in spans if e["name"] != "extra" and threads[e["tid"]] != "ddr4"]
    assert {e["args"]["layer"] for e in layered} == set(range(w.model.layers))
    # DRS: how many entries compute, per layer; the cache reads the rest of the batch
    drs = {
        (e["args"]["step"], e["args"]["layer"]): e["args"]["computing"]
        for e in _spans(tl)
        if threads[e["tid"]] == "drs"
    }
    assert len(drs) == 2 * w.model.layers
    reads: dict = {}
    for e in spans:
        if e["name"] == "replay read" and threads[e["tid"]] == "replay_cache":
            reads.setdefault((e["args"]["step"], e["args"]["layer"]), []).extend(e["args"]["entries"])
    for key, computing in drs.items():
        assert len(reads.get(key, [])) == batch - computing, key


def _processes(timeline: dict) -> dict[int, str]:
    return {e["pid"]: e["args"]["name"] for e in timeline["traceEvents"] if e["name"] == "process_name"}


def _tracks(timeline: dict) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(process, counter) -> [(ts, value)] in file order."""
    procs, out = _processes(timeline), {}
    for e in _counters(timeline):
        (value,) = e["args"].values()
        out.setdefault((procs[e["pid"]], e["name"]), []).append((e["ts"], value))
    return out


#: Two memory groups (HBM and DDR4), both used by the tiny model.
U280 = {"hardware.preset": "alveo-u280", "outputs.timeline_steps": 3}


def test_a_counter_is_the_sum_of_its_intervals_one_event_per_change():
    tl = Timeline()
    tl.counter("memory", "q", "n", 2.0, 5.0, 1)  # recorded out of time order, overlapping
    tl.counter("memory", "q", "n", 1.0, 3.0, 1)
    tl.counter("memory", "q", "n", 5.0, 6.0, 1)  # starts where the first ends: no change at 5
    tl.counter("memory", "q", "n", 4.0, 4.0, 1)  # empty
    tl.counter("memory", "hits", "n", 3.0, None, 2)  # from 3 on
    tl.enabled = False
    tl.counter("memory", "q", "n", 0.0, 9.0, 5)  # outside the window: not recorded
    events = tl.to_json()["traceEvents"]
    q = [(e["ts"], e["args"]["n"]) for e in events if e.get("name") == "q"]
    assert q == [(1e6, 1), (2e6, 2), (3e6, 1), (6e6, 0)]
    assert [(e["ts"], e["args"]["n"]) for e in events if e.get("name") == "hits"] == [(3e6, 2)]
    assert {e["pid"] for e in events if e["ph"] == "C"} == {
        e["pid"] for e in events if e["name"] == "process_name" and e["args"]["name"] == "memory"
    }


@pytest.mark.parametrize("granularity", ["phase", "instruction"])
def test_counters_are_valid_trace_events(granularity):
    w = api.load(TINY, {**U280, "simulation.granularity": granularity})
    tl = api.run(w).timeline
    json.dumps(tl, allow_nan=False)
    procs = _processes(tl)
    for e in _counters(tl):
        assert set(e) == {"name", "ph", "pid", "ts", "args"} and e["pid"] in procs, e
        assert len(e["args"]) == 1, e
        (value,) = e["args"].values()
        assert type(value) in (int, float) and math.isfinite(value) and value >= 0, e
    tracks = _tracks(tl)
    expected = {("memory", f"{g} {what}") for g in w.hardware.memory for what in ("bandwidth", "transfers")}
    expected |= {("units", "tas queue"), ("units", "replay_cache hits"), ("cores", "core0 queue")}
    assert expected <= set(tracks), set(tracks)
    for key, points in tracks.items():
        times, values = [t for t, _ in points], [v for _, v in points]
        assert times == sorted(times) and len(set(times)) == len(times), key  # sorted, one event per instant
        assert all(a != b for a, b in zip(values, values[1:], strict=False)), key  # one event per change
        if key[1].endswith("hits"):  # cumulative: entries read from the cache since the window began
            assert values == sorted(values) and values[0] > 0, key
        else:  # an interval counter comes back to 0 once its work is done
            assert values[-1] == 0 and max(values) > 0, key
        if key[1].endswith(("queue", "transfers")):
            assert all(v == int(v) for v in values), key


@pytest.mark.parametrize(
    "overrides",
    [
        {"simulation.granularity": "phase"},
        {"simulation.granularity": "phase", "outputs.timeline_start": 40},
        {"simulation.granularity": "instruction"},
        {"simulation.granularity": "instruction", "scheduler.layer_barrier": False},
    ],
)
def test_bandwidth_counters_stay_under_the_peak_and_integrate_to_the_bytes_moved(overrides):
    w = api.load(TINY, {**U280, **overrides})
    tl = api.run(w).timeline
    tracks, threads, procs = _tracks(tl), _threads(tl), _processes(tl)
    for group, spec in w.hardware.memory.items():
        points = tracks[("memory", f"{group} bandwidth")]
        rates = [v for _, v in points]
        assert 0 < max(rates) <= spec.bandwidth_GBps
        # a group serves at its sustained rate whenever a transfer waits, never above it
        sustained = spec.bandwidth_GBps * spec.efficiency
        assert all(r == 0 or r == pytest.approx(sustained, rel=1e-9) for r in rates), (rates, sustained)
        moved = sum(v * 1e9 * (b - a) * 1e-6 for (a, v), (b, _) in zip(points, points[1:], strict=False))
        spans = [e for e in _spans(tl) if procs[e["pid"]] == "memory" and threads[e["tid"]] == group]
        assert spans
        assert moved == pytest.approx(sum(e["args"]["bytes"] for e in spans), rel=1e-9)


def test_instruction_queue_counters_never_exceed_the_queue_depth():
    for depth in (1, 4):
        w = api.load(TINY, {"simulation.granularity": "instruction", "hardware.queue_depth": depth})
        queues = {k: v for k, v in _tracks(api.run(w).timeline).items() if k[1].endswith(" queue")}
        assert {("cores", "core0 queue"), ("units", "tas queue")} <= set(queues)
        highest = max(v for points in queues.values() for _, v in points)
        assert highest == depth  # full at some point (the dispatcher runs ahead), never fuller


def test_frame_0_alone_shows_neither():
    tl = api.run(api.load(TINY, {"outputs.timeline_start": 0, "outputs.timeline_steps": 2})).timeline
    busy = {_threads(tl)[e["tid"]] for e in _spans(tl)}
    assert "tas" not in busy and "drs" not in busy


@pytest.mark.parametrize("granularity", ["phase", "instruction"])
def test_the_window_moves_the_spans_not_the_results(granularity):
    runs = {
        k: api.run(api.load(TINY, {**o, "simulation.granularity": granularity}))
        for k, o in {
            "off": {"outputs.timeline_steps": 0},
            "default": {},
            "late": {"outputs.timeline_start": 40, "outputs.timeline_steps": 3},
        }.items()
    }
    assert runs["off"].timeline is None
    for k in ("default", "late"):
        assert runs[k].summary == runs["off"].summary  # to every digit
        # the counters end with the window's spans; its transfers are requested within it (instructions
        # enter their queues before the first one runs)
        spans, counters = _spans(runs[k].timeline), _counters(runs[k].timeline)
        first, last = min(e["ts"] for e in spans), max(e["ts"] + e["dur"] for e in spans)
        assert counters and all(e["ts"] <= last * (1 + 1e-12) for e in counters)
        memory = _processes(runs[k].timeline)
        assert all(first <= e["ts"] for e in counters if memory[e["pid"]] == "memory")
    # absolute times, in the late window as well
    default_end = max(e["ts"] for e in _counters(runs["default"].timeline))
    assert all(e["ts"] > default_end for e in _counters(runs["late"].timeline))
    late = _spans(runs["late"].timeline)
    assert {e["args"]["step"] for e in late} == {40, 41, 42}
    # absolute times: the window starts after 40 steps' worth of decode
    assert min(e["ts"] for e in late) > min(e["ts"] for e in _spans(runs["default"].timeline))


def test_a_window_past_the_last_step_is_refused():
    with pytest.raises(WorkloadError, match="outputs.timeline_start: 64 is past the last decode step"):
        api.load(TINY, {"outputs.timeline_start": 64})
