"""The instruction-level machine's mechanisms on crafted cases whose numbers are worked out by hand:
channel arbitration, bursts and latency; bounded queues and head-of-line blocking; double buffering of
the weight stream; the DRS instruction filter and dispatch rules; the layer barrier; agreement with the
phase-granularity fast path; and the configuration rules of the machine's options."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
import simpy
from tiny_workload import TINY, compute_bound

from accelerator.channel import Channel
from accelerator.engines import CoreEngine, Engine, InstructionQueue, Record
from accelerator.machine import Machine, layer_cycles, run_instructions
from accelerator.spec import MemoryGroup
from accelerator.timeline import Timeline
from cosim.config import WorkloadError, resolve
from cosim.simulate import execute, make_job
from cosim.traces import load_trace

# -- helpers -----------------------------------------------------------------------------------------------


def channel(arbitration="round_robin", latency_ns=0.0, burst_bytes=1, Bps=1000.0):
    """A channel of ``Bps`` bytes per second (bandwidth_GBps is in 1e9 B/s; efficiency 1)."""
    env = simpy.Environment()
    group = MemoryGroup(
        bandwidth_GBps=Bps / 1e9,
        efficiency=1.0,
        latency_ns=latency_ns,
        burst_bytes=burst_bytes,
        arbitration=arbitration,
    )
    return env, Channel(env, "main", group, Timeline())


def issue(env, ch, requester, nbytes, at=0.0, ends=None, key=None):
    """Transfer ``nbytes`` for ``requester`` at time ``at``; record its completion time in ``ends[key]``."""

    def proc():
        if at:
            yield env.timeout(at)
        yield ch.transfer(requester, nbytes)
        ends[key] = env.now

    env.process(proc())


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


def crafted(w, replayed_entries):
    """Replay cube: ``replayed_entries`` replay in every layer from frame 1 on, everyone else computes."""
    v = w.video
    replay = np.zeros((v.batch, w.model.layers, v.steps), dtype=bool)
    replay[list(replayed_entries), :, v.tokens_per_frame :] = True
    return replay


def instruction(job, **kw):
    return execute(job, "event", granularity="instruction", **kw)


def spy_on_cores(machine: Machine) -> list[tuple[int, str, tuple[int, ...]]]:
    """(core, instruction name, entries) of every record the dispatcher hands a core."""
    log: list = []
    for core in machine.cores:
        submit = core.submit

        def spy(rec, submit=submit, core=core):
            log.append((core.index, rec.name, tuple(rec.entries)))
            return submit(rec)

        core.submit = spy
    return log


# -- 1. channel arbitration, bursts, latency -----------------------------------------------------------------


def test_round_robin_shares_the_channel_equally():
    # 2 requesters x 1000 B at 1000 B/s, both from t=0: 500 B/s each, both end at 2000/1000 = 2.0 s.
    env, ch = channel("round_robin")
    ends = {}
    issue(env, ch, "a", 1000, ends=ends, key="a")
    issue(env, ch, "b", 1000, ends=ends, key="b")
    env.run()
    assert ends == {"a": approx(2.0), "b": approx(2.0)}
    assert ch.bytes_moved == 2000 and ch.busy_s == approx(2.0)


def test_fifo_serves_one_transfer_at_a_time():
    # same transfers under fifo: a alone at 1000 B/s ends at 1.0 s, then b ends at 2.0 s.
    env, ch = channel("fifo")
    ends = {}
    issue(env, ch, "a", 1000, ends=ends, key="a")
    issue(env, ch, "b", 1000, ends=ends, key="b")
    env.run()
    assert ends == {"a": approx(1.0), "b": approx(2.0)}


@pytest.mark.parametrize(
    "arbitration,expected",
    [
        # a alone for 0.5 s (500 B served), then a and b at 500 B/s each: a's last 500 B take 1.0 s -> 1.5 s;
        # b has 500 B by then and finishes alone at 1000 B/s -> 2.0 s.
        ("round_robin", {"a": 1.5, "b": 2.0}),
        # a keeps the channel until 1.0 s; b (queued at 0.5 s) follows -> 2.0 s.
        ("fifo", {"a": 1.0, "b": 2.0}),
    ],
)
def test_a_transfer_arriving_midway_changes_the_shares(arbitration, expected):
    env, ch = channel(arbitration)
    ends = {}
    issue(env, ch, "a", 1000, ends=ends, key="a")
    issue(env, ch, "b", 1000, at=0.5, ends=ends, key="b")
    env.run()
    assert ends == {k: approx(v) for k, v in expected.items()}


def test_round_robin_with_three_sizes():
    # a 1000 B, b 2000 B, c 500 B at t=0: 333.3 B/s each; c ends when 500 B are served: 1.5 s.
    # a then has 500 B left, b 1500 B: 500 B/s each -> a ends at 1.5 + 1.0 = 2.5 s; b has 1000 B left,
    # alone: 2.5 + 1.0 = 3.5 s (= 3500 B / 1000 B/s: the channel never idles).
    env, ch = channel("round_robin")
    ends = {}
    for key, nbytes in (("a", 1000), ("b", 2000), ("c", 500)):
        issue(env, ch, key, nbytes, ends=ends, key=key)
    env.run()
    assert ends == {"a": approx(2.5), "b": approx(3.5), "c": approx(1.5)}


def test_one_requesters_transfers_stay_in_order_and_hold_one_share():
    # a queues two 500 B transfers, b one 1000 B: a holds one share (500 B/s) throughout, so a1 ends at
    # 1.0 s, a2 at 2.0 s, and b (500 B/s all along) at 2.0 s.
    env, ch = channel("round_robin")
    ends = {}
    issue(env, ch, "a", 500, ends=ends, key="a1")
    issue(env, ch, "a", 500, ends=ends, key="a2")
    issue(env, ch, "b", 1000, ends=ends, key="b")
    env.run()
    assert ends == {"a1": approx(1.0), "a2": approx(2.0), "b": approx(2.0)}


@pytest.mark.parametrize("arbitration", ["round_robin", "fifo"])
def test_latency_is_paid_once_per_transfer_and_does_not_occupy_the_channel(arbitration):
    # latency 0.25 s: one requester, two 1000 B transfers back to back. The channel serves the second
    # right after the first's last byte: data in at 1.0 s and 2.0 s, each complete 0.25 s later.
    env, ch = channel(arbitration, latency_ns=0.25e9)
    ends = {}
    issue(env, ch, "a", 1000, ends=ends, key="a1")
    issue(env, ch, "a", 1000, ends=ends, key="a2")
    env.run()
    assert ends == {"a1": approx(1.25), "a2": approx(2.25)}
    assert ch.busy_s == approx(2.0)  # the latency is not channel time
    # two concurrent requesters (round robin): both data in at 2.0 s, complete at 2.25 s.
    env, ch = channel("round_robin", latency_ns=0.25e9)
    ends = {}
    issue(env, ch, "a", 1000, ends=ends, key="a")
    issue(env, ch, "b", 1000, ends=ends, key="b")
    env.run()
    assert ends == {"a": approx(2.25), "b": approx(2.25)}


def test_transfers_are_rounded_up_to_whole_bursts():
    # 1 B with 64 B bursts moves 64 B: 64 / 1000 = 0.064 s; 65 B moves two bursts = 128 B -> 0.128 s more.
    env, ch = channel(burst_bytes=64)
    ends = {}
    issue(env, ch, "a", 1, ends=ends, key="one")
    issue(env, ch, "a", 65, ends=ends, key="two")
    env.run()
    assert ends == {"one": approx(0.064), "two": approx(0.064 + 0.128)}
    assert ch.bytes_moved == 64 + 128


def test_an_empty_transfer_is_done_at_once():
    env, ch = channel(latency_ns=0.25e9)
    ends = {}
    issue(env, ch, "a", 0, at=1.0, ends=ends, key="a")
    env.run()
    assert ends == {"a": 1.0} and ch.bytes_moved == 0


# -- 2. bounded queues: back-pressure and head-of-line blocking -----------------------------------------------


def test_instruction_queue_of_depth_one():
    env = simpy.Environment()
    entered = []
    q = InstructionQueue(env, 1, entered.append)
    assert q.put("a") is None and entered == ["a"]  # room
    full = q.put("b")
    assert full is not None and not full.triggered  # the putter waits
    assert entered == ["a"]  # "b" is not in the queue yet: nothing may act on it
    assert q.get() == "a"  # taking "a" lets "b" in
    assert full.triggered and list(q.items) == ["b"] and entered == ["a", "b"]
    assert q.get() == "b"
    assert q.get() is None and q.ready is not None  # empty: the consumer arms ``ready``


def test_a_held_back_instruction_is_not_prefetched():
    """Queue depth 1, three buffers: while the dispatcher waits for room, the instruction it holds is not
    in the queue, so its operand is not fetched yet (it used to be, at 0). Records with 1 s operand
    fetches and 1 s compute on a 1000 B/s channel: A is fetched at 0; B enters the queue when the core
    takes A (at 0) and is fetched then; C waits outside until the core takes B, which is when A ends:
    A's operand is in at 1 s, its compute ends at 2 s."""
    env = simpy.Environment()
    tl = Timeline()
    ch = Channel(env, "m", MemoryGroup(bandwidth_GBps=1e-6, efficiency=1.0, latency_ns=0, burst_bytes=1), tl)
    ends: dict[str, float] = {}
    core = CoreEngine(env, 0, 1, 3, tl, lambda rec: ends.__setitem__(rec.name, env.now))
    fetch_start: dict[str, float] = {}
    original = ch.transfer

    def spy(requester, nbytes, done=None, label="", args=None):
        fetch_start[label] = env.now
        return original(requester, nbytes, done, label, args)

    ch.transfer = spy

    def dispatcher():
        for name in "ABC":
            event = core.submit(Record(name, 0, None, [0], 1.0, 1000.0, ch, 0.0))
            if event is not None:
                yield event

    env.process(dispatcher())
    env.run()
    assert fetch_start == {"A": 0.0, "B": 0.0, "C": 2.0}


def _head_of_line(depth: int):
    """One dispatcher, in program order: three 1 s instructions for engine 0, then one for engine 1."""
    env = simpy.Environment()
    tl = Timeline()
    ends: dict[str, float] = {}
    engines = [
        Engine(env, f"e{i}", depth, tl, lambda rec: ends.__setitem__(rec.name, env.now)) for i in range(2)
    ]
    stall = [0.0]

    def dispatcher():
        for name, target in (("A", 0), ("B", 0), ("C", 0), ("D", 1)):
            rec = Record(name, 0, None, [0], 1.0)
            event = engines[target].submit(rec)
            if event is not None:
                t = env.now
                yield event
                stall[0] += env.now - t

    env.process(dispatcher())
    env.run()
    return ends, stall[0]


def test_a_full_queue_blocks_another_cores_instruction():
    # depth 16: everything is queued at t=0; e0 runs A, B, C over 0-3 s, e1 runs D over 0-1 s.
    ends, stall = _head_of_line(16)
    assert ends == {"A": 1.0, "B": 2.0, "C": 3.0, "D": 1.0} and stall == 0.0
    # depth 1: A is put (e0 takes it at t=0), B waits for room until e0 takes A (still t=0), C waits
    # until e0 takes B at 1.0 s; only then is D dispatched: D runs 1-2 s although e1 was idle from t=0.
    # The dispatcher stalled 1.0 s (on C), and D is delayed by exactly that.
    ends, stall = _head_of_line(1)
    assert ends == {"A": 1.0, "B": 2.0, "C": 3.0, "D": 2.0}
    assert stall == 1.0


def test_queue_depth_one_stalls_the_dispatcher_of_a_machine(tiny_raw):
    for cores in (2, 3):
        deep = resolve(tiny_raw, [f"hardware.cores={cores}"])
        shallow = resolve(tiny_raw, [f"hardware.cores={cores}", "hardware.queue_depth=1"])
        replay = load_trace(deep).trace.replay_cube()
        r16 = instruction(make_job(deep, replay))
        r1 = instruction(make_job(shallow, replay))
        assert r16.machine["dispatch_stall_s"] == 0.0
        assert r1.machine["dispatch_stall_s"] > 0.0
        assert r1.latency_s >= r16.latency_s
        assert r1.machine["instructions"] == r16.machine["instructions"]  # the same work, later


# -- 3. double buffering of the weight stream ------------------------------------------------------------------


def _core_run(buffers: int, transfer_s: float, compute_s: float, count: int = 2):
    """``count`` GEMV-like records on one core: each streams ``transfer_s`` of operand at 1000 B/s, then
    computes ``compute_s``. Returns the end of each."""
    env, ch = channel("round_robin")
    ends: list[float] = []
    core = CoreEngine(env, 0, 16, buffers, Timeline(), lambda rec: ends.append(env.now))
    for i in range(count):
        core.submit(Record(f"w{i}", 0, None, [0], compute_s, nbytes=transfer_s * 1000, channel=ch))
    env.run()
    return ends


@pytest.mark.parametrize("t,c", [(1.0, 1.0), (1.0, 2.0), (2.0, 1.0)])
def test_double_buffering_hides_the_next_weight_fetch(t, c):
    # 2 buffers: both fetches start at t=0 (in order on the core's share): w0 in at T, w1 in at 2T. The tile
    # runs w0 over T..T+C and w1 from max(T+C, 2T): end = T + 2C when T <= C.
    # 1 buffer: w1's fetch starts only when w0 ends and frees the buffer: 2T + 2C.
    two = _core_run(2, t, c)
    one = _core_run(1, t, c)
    assert one == [approx(t + c), approx(2 * t + 2 * c)]
    assert two == [approx(t + c), approx(max(t + 2 * c, 2 * t + c))]
    if t <= c:
        assert two[-1] == approx(t + 2 * c)


def test_the_buffer_is_freed_when_its_instruction_ends():
    # 3 records, T = 2 s, C = 1 s, 2 buffers: fetches w0 0-2, w1 2-4 (both issued at t=0); w0 computes
    # 2-3 and frees its buffer at 3, so w2's fetch is issued at 3 and queued behind w1: 4-6. w1 computes
    # 4-5, w2 6-7: memory-bound, 3T + C = 7 s.
    assert _core_run(2, 2.0, 1.0, count=3) == [approx(3.0), approx(5.0), approx(7.0)]
    # 3 buffers: nothing waits for a buffer, same as above here (the channel is the bottleneck).
    assert _core_run(3, 2.0, 1.0, count=3) == [approx(3.0), approx(5.0), approx(7.0)]
    # 1 buffer: (T + C) per record = 9 s.
    assert _core_run(1, 2.0, 1.0, count=3) == [approx(3.0), approx(6.0), approx(9.0)]


def test_weight_buffers_matter_on_a_memory_bound_machine(tiny_raw):
    """The tiny model on the KV260's DDR4 is weight-bandwidth-bound: a single operand buffer exposes
    every fetch; more buffers can only help."""
    raw = tiny_raw
    lat = {}
    for buffers in (1, 2, 4):
        w = resolve(
            raw, ["hardware.cores=2", f"hardware.weight_buffers={buffers}", "hardware.weight_buffer_KiB=1"]
        )
        lat[buffers] = instruction(make_job(w, load_trace(w).trace.replay_cube())).latency_s
    assert lat[1] > lat[2] >= lat[4]


# -- 4. the DRS instruction filter and dispatch rules ----------------------------------------------------------

# The tiny model on the compute-bound board (100 MHz, 64 lanes, one block per matrix), cycles per entry:
#   qkv  = ceil(128/64)*64 + 3 = 131      o    = ceil(64/64)*64 + 3 = 67
#   up   = ceil(352/64)*64 + 3 = 387      down = ceil(64/64)*176 + 3 = 179   -> MLP = 566
#   TAS  = 4 heads * ceil(16/16) + log2(16) + 3 = 11   replay move = ceil(64*16/512) + 2 = 4
# (the input-buffer writes are hidden by the instruction before: 64 < 179, 64 < 67, 176 < 387).
CYCLES = {"qkv": 131, "o": 67, "mlp": 566, "tas": 11, "replay": 4}


def _check_cycles(job):
    c = job.cost
    got = {
        "qkv": c.qkv_cycles,
        "o": c.o_cycles,
        "mlp": c.mlp_cycles,
        "tas": c.tas_unit_cycles,
        "replay": c.replay_unit_cycles,
    }
    assert got == CYCLES


def _compute_bound(tiny_raw, *overrides):
    return resolve(compute_bound(tiny_raw), ["hardware.memory.ddr4.latency_ns=0", *overrides])


def test_drs_dispatches_exactly_the_computing_entries_mlps(tiny_raw):
    # batch 4 on 2 cores, entries 1 and 3 replay from frame 1 on (16 of the 64 steps are frame 0).
    w = _compute_bound(tiny_raw, "hardware.cores=2")
    job = make_job(w, crafted(w, [1, 3]))
    m = Machine(job)
    log = spy_on_cores(m)
    r = m.run()
    steps, frame0, layers = 64, 16, 4
    assert (w.video.steps, w.video.tokens_per_frame, w.model.layers, w.video.batch) == (
        steps,
        frame0,
        layers,
        4,
    )
    later = steps - frame0
    # MLP GEMVs: frame 0 (no DRS, all compute) one up and one down per core for its static pair; later,
    # DRS maps the computing entries 0, 2 round robin: entry 0 -> core 0, entry 2 -> core 1.
    mlp = Counter((core, name, entries) for core, name, entries in log if name.startswith(("up", "down")))
    assert mlp == {
        (0, "up[0]", (0, 2)): frame0 * layers,
        (0, "down[0]", (0, 2)): frame0 * layers,
        (1, "up[0]", (1, 3)): frame0 * layers,
        (1, "down[0]", (1, 3)): frame0 * layers,
        (0, "up[0]", (0,)): later * layers,
        (0, "down[0]", (0,)): later * layers,
        (1, "up[0]", (2,)): later * layers,
        (1, "down[0]", (2,)): later * layers,
    }
    # Instructions that run, per layer. Frame 0: qkv 2 + attn 4 + o 2 + up 2 + down 2 + cache writes 2
    # (one per static group) = 14. Later: qkv 2 + TAS 2 + attn 4 + o 2 + read 1 (entries 1, 3) + up 2 +
    # down 2 + write 1 (entries 0, 2) = 16. DRS and SYNC are dispatcher work, not engine instructions.
    assert r.machine["instructions"] == layers * (frame0 * 14 + later * 16)
    assert r.replay_reads == layers * later * 2
    assert r.replay_writes == layers * (frame0 * 4 + later * 2)
    assert r.drs_events == layers * later


def test_without_drs_replayed_entries_leave_their_core_idle(tiny_raw):
    w = _compute_bound(tiny_raw, "hardware.cores=2", "scheduler.drs=false")
    m = Machine(make_job(w, crafted(w, [1, 3])))
    log = spy_on_cores(m)
    r = m.run()
    mlp = Counter((core, name, entries) for core, name, entries in log if name.startswith(("up", "down")))
    # the filter still drops entries 1 and 3, but nothing moves: core 1 runs no MLP after frame 0
    assert mlp == {
        (0, "up[0]", (0, 2)): 256,
        (0, "down[0]", (0, 2)): 256,
        (1, "up[0]", (1, 3)): 64,
        (1, "down[0]", (1, 3)): 64,
    }
    assert r.drs_events == 0


def test_least_loaded_moves_work_off_the_busy_core(tiny_raw):
    """Batch 3 on 2 cores: statically core 0 has entries 0, 2 and core 1 entry 1. Only entry 1 computes
    its MLP from frame 1 on. Per layer of a later step (cycles from the layer's start, A = one entry's
    attention at that step's context; every GEMV instruction ends with its output drain: qkv and o 66
    cycles, up 34, down 66):
      core 0: qkv 0-328 (2 x 131 + 66), attention of entries 0, 2 to 328+2A, o (2 x 67 + 66) to 528+2A
      core 1: qkv 0-197, attention of entry 1 to 197+A, o to 330+A
      TAS unit, in order: core 0's pair 328-350, core 1's entry 350-361; DRS (3+1 + 100 overhead) to 465
      replay reads of entries 0, 2 (2 x 4 cycles + the writer's 2), once every attention output is
      written (they form y = h + d): 528+2A .. 538+2A
    round_robin: the first computing entry goes to core 0, behind its o: MLP (387 + 34 + 179 + 66 = 666)
      528+2A .. 1194+2A, its cache write (a prefetch cycle and 4) 5 cycles later: the layer ends at
      1199+2A.
    least_loaded: core 0 has 63+2A cycles of backlog at 465, core 1 at most A-135: entry 1 goes to core
      1, MLP from max(465, 330+A) for 666 cycles, its write 5 cycles after it and the reads: the layer
      ends at max(543+2A, 1136, 1001+A)."""
    w = _compute_bound(tiny_raw, "hardware.cores=2", "video.prompts=3", "video.cfg=false")
    assert w.video.batch == 3 and w.scheduler.overhead_cycles == 100
    job = make_job(w, crafted(w, [0, 2]))
    _check_cycles(job)
    results, mlp = {}, {}
    for rule in ("round_robin", "least_loaded"):
        m = Machine(job, dispatch=rule)
        log = spy_on_cores(m)
        results[rule] = m.run()
        mlp[rule] = Counter((core, entries) for core, name, entries in log if name == "up[0]")
    layers, frame0, later = 4, 16, 48
    # frame 0 (no DRS): core 0 runs entries 0, 2 and core 1 entry 1 under both rules
    assert mlp["round_robin"] == {
        (0, (0, 2)): frame0 * layers,
        (1, (1,)): frame0 * layers,
        (0, (1,)): later * layers,
    }
    assert mlp["least_loaded"] == {(0, (0, 2)): frame0 * layers, (1, (1,)): (frame0 + later) * layers}
    a = np.asarray(job.cost.attention_entry_cycles(job.context()[frame0:]), dtype=float)
    # backlogs at DRS time (cycle 465): core 1 max(330+A-465, 0) < core 0 528+2A-465 at every step, so
    # least_loaded always picks core 1; and core 0's o ends after DRS (528+2A > 465), as assumed above
    assert (np.maximum(a - 135, 0) < 63 + 2 * a).all() and (528 + 2 * a > 465).all()
    gain = (1199 + 2 * a) - np.maximum(np.maximum(543 + 2 * a, 1136), 1001 + a)
    expected = layers * gain.sum() / w.hardware.clock_Hz
    got = results["round_robin"].latency_s - results["least_loaded"].latency_s
    assert got == pytest.approx(expected, rel=1e-9)
    assert expected > 0


# -- 5. the layer barrier ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", ["compute_bound", "kv260"])
@pytest.mark.parametrize("cores", [1, 2, 3])
@pytest.mark.parametrize("drs", ["true", "false"])
def test_no_barrier_is_never_slower(tiny_raw, memory, cores, drs):
    raw = compute_bound(tiny_raw) if memory == "compute_bound" else tiny_raw
    w = resolve(raw, [f"hardware.cores={cores}", f"scheduler.drs={drs}"])
    job = make_job(w, load_trace(w).trace.replay_cube())
    on = instruction(job, barrier=True)
    off = instruction(job, barrier=False)
    assert off.latency_s <= on.latency_s
    assert off.machine["instructions"] == on.machine["instructions"]
    assert off.pe_macs == on.pe_macs and off.bytes_by_group == on.bytes_by_group


def test_no_barrier_uses_cross_layer_slack(tiny_raw):
    """Static mapping (DRS off), batch 4 on 2 cores; from frame 1 the replays alternate: in even layers
    core 1's entries (1, 3) replay, in odd layers core 0's (0, 2). With the barrier every layer waits for
    the one core that runs two MLPs. Per layer (cycles, A = one entry's attention at the step's context):
    both cores qkv 2 x 131 + 66 (the instruction's output drain) = 328, attention 2A, o 2 x 67 + 66 = 200
    -> 528+2A; the busy core's two MLPs (up 2 x 387 + 34, down 2 x 179 + 66: 1232) -> 1760+2A; its
    group's two cache writes (a prefetch cycle + 2 x 4) -> 1769+2A. In frame 0 both cores compute and the
    replay-cache controller stores both groups one after the other: 1778+2A. Without the barrier the idle core runs ahead into the next layer, where it is the
    busy one: measured 0.803 of the barrier's latency."""
    w = _compute_bound(tiny_raw, "hardware.cores=2", "scheduler.drs=false")
    v = w.video
    replay = np.zeros((v.batch, w.model.layers, v.steps), dtype=bool)
    replay[1::2, 0::2, v.tokens_per_frame :] = True
    replay[0::2, 1::2, v.tokens_per_frame :] = True
    job = make_job(w, replay)
    _check_cycles(job)
    on = instruction(job, barrier=True)
    off = instruction(job, barrier=False)
    a = np.asarray(job.cost.attention_entry_cycles(job.context()), dtype=float)
    frame0 = v.tokens_per_frame
    expected_on = w.model.layers * ((1778 + 2 * a[:frame0]).sum() + (1769 + 2 * a[frame0:]).sum()) / 100e6
    # 1e-9: the first weight block of each layer (4 KiB at 1e18 B/s) is exposed, 4e-15 s per layer
    assert on.latency_s == pytest.approx(expected_on, rel=1e-9)
    assert off.latency_s < 0.9 * on.latency_s, off.latency_s / on.latency_s


def _finished_records(machine: Machine) -> list:
    """(record, engine, end time) of every instruction the machine runs."""
    out: list = []
    for engine in (*machine.cores, machine.tas_unit, machine.replay_unit):
        done = engine.done

        def wrapped(rec, done=done, engine=engine):
            out.append((rec, engine, machine.env.now))
            done(rec)

        engine.done = wrapped
    return out


@pytest.mark.parametrize("barrier", [True, False])
@pytest.mark.parametrize("drs", ["true", "false"])
@pytest.mark.parametrize("cores", [2, 3])
def test_instructions_wait_for_their_inputs(tiny_raw, barrier, drs, cores):
    """With or without the barrier: a layer's QKV of an entry starts after the entry's previous layer output
    (its down projection or its replay-cache read), its MLP after its attention output (its O projection,
    maybe on another core after DRS), its cache write after its output, the TAS of a core's entries after
    that core's QKV. With the barrier no core instruction of a layer starts before the layer before ended.
    A core computes its instruction for exactly its cycles once its operand is in, so start = end - time."""
    w = _compute_bound(
        tiny_raw, f"hardware.cores={cores}", f"scheduler.drs={drs}", "hardware.weight_buffer_KiB=1"
    )
    job = make_job(w, load_trace(w).trace.replay_cube())
    m = Machine(job, barrier=barrier)
    runs = _finished_records(m)
    m.run()
    output, attention, qkv_end, layer_end = {}, {}, {}, {}
    for rec, engine, end in runs:
        u = rec.layer_run.unit
        layer_end[u] = max(layer_end.get(u, 0.0), end)
        for e in rec.entries:
            if rec.name.startswith("down") or rec.name == "replay read":
                output[u, e] = max(output.get((u, e), 0.0), end)
            if rec.name.startswith("o["):
                attention[u, e] = max(attention.get((u, e), 0.0), end)
        if rec.name.startswith("qkv"):
            qkv_end[u, engine.index] = max(qkv_end.get((u, engine.index), 0.0), end)
    layers = w.model.layers
    checked = Counter()
    eps = 1e-12
    for rec, engine, end in runs:
        u, start = rec.layer_run.unit, end - rec.seconds
        previous = u - 1 if u % (layers + 1) else u - 2  # the step's extra-work row is empty here
        if rec.name == "qkv[0]" and u > 0:
            assert all(start >= output[previous, e] - eps for e in rec.entries)
            checked["qkv"] += 1
        if rec.name == "up[0]":
            assert all(start >= attention[u, e] - eps for e in rec.entries)
            checked["up"] += 1
        if rec.name == "replay write":
            assert all(start >= output[u, e] - eps for e in rec.entries)
            checked["write"] += 1
        if rec.name == "tas":
            assert start >= qkv_end[u, m.static_core[rec.entries[0]]] - eps
            checked["tas"] += 1
        if barrier and engine in m.cores and u > 0:
            assert start >= layer_end[previous] - eps
            checked["barrier"] += 1
    assert min(checked.values()) > 0 and len(checked) == 4 + barrier


@pytest.mark.parametrize("barrier", [True, False])
@pytest.mark.parametrize("dispatch", ["round_robin", "least_loaded"])
def test_runs_are_deterministic(tiny_raw, barrier, dispatch):
    w = resolve(tiny_raw, ["hardware.cores=3"])
    job = make_job(w, load_trace(w).trace.replay_cube())
    a = instruction(job, dispatch=dispatch, barrier=barrier, timeline_steps=1)
    b = instruction(job, dispatch=dispatch, barrier=barrier, timeline_steps=1)
    assert a.latency_s == b.latency_s
    assert a.machine == b.machine
    assert np.array_equal(a.layer_phase_s, b.layer_phase_s) and np.array_equal(a.core_busy_s, b.core_busy_s)
    assert a.bytes_by_group == b.bytes_by_group and a.timeline == b.timeline


# -- 6. the instruction model against the phase-granularity fast path ------------------------------------------


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("drs", ["true", "false"])
@pytest.mark.parametrize("cores", [1, 2, 3])
def test_instruction_equals_phase_where_the_fast_path_holds(tiny_raw, cores, drs, dense):
    """Compute-bound, no access latency: the only difference left is the first weight block's fetch of each
    layer, exposed in the instruction model (4096 B at 1e18 B/s: 4e-15 s per core and layer), so the
    latencies agree to 1e-9 relative."""
    w = _compute_bound(tiny_raw, f"hardware.cores={cores}", f"scheduler.drs={drs}")
    job = make_job(w, None if dense else load_trace(w).trace.replay_cube())
    phase = execute(job, "event")
    inst = instruction(job)
    assert inst.latency_s == pytest.approx(phase.latency_s, rel=1e-9)
    assert inst.pe_macs == pytest.approx(phase.pe_macs, rel=1e-12)
    assert inst.bytes_by_group == pytest.approx(phase.bytes_by_group, rel=1e-12)
    assert (inst.replay_reads, inst.replay_writes, inst.drs_events) == (
        phase.replay_reads,
        phase.replay_writes,
        phase.drs_events,
    )


def test_static_cache_writes_follow_each_core(tiny_raw):
    """Batch 4 on 2 cores, static, entry 0 replays from frame 1: core 0 computes one MLP (entry 2), core 1
    two (1, 3). Entry 2's output is stored (a prefetch cycle + 4) while core 1 still computes, so only core
    1's store instruction (1 + 2 x 4 cycles) follows the last MLP, in both granularities and in the analytic
    model. In frame 0 every entry computes, two per core, so both cores' store instructions (2 x 9 cycles)
    follow the last MLP."""
    w = _compute_bound(tiny_raw, "hardware.cores=2", "scheduler.drs=false")
    job = make_job(w, crafted(w, [0]))
    phase, inst = execute(job, "event"), instruction(job)
    analytic = execute(job, "analytic")
    assert inst.latency_s == pytest.approx(phase.latency_s, rel=1e-9)
    assert analytic.latency_s == pytest.approx(phase.latency_s, rel=1e-9)
    # (frame 0: 16 steps x 4 layers x 2 instructions + later: 48 steps x 4 layers x 1) x 9 cycles at 100 MHz
    stores_after_last_mlp = (16 * 4 * 2 + 48 * 4 * 1) * 9 / 100e6
    assert phase.breakdown_s["replay"] == pytest.approx(stores_after_last_mlp, rel=1e-6)


@pytest.mark.parametrize("cores", [1, 2, 3])
@pytest.mark.parametrize("drs", ["true", "false"])
@pytest.mark.parametrize("dense", [False, True])
def test_instruction_not_faster_than_phase_when_memory_bound(tiny_raw, cores, drs, dense):
    """TINY on the KV260 (one DDR4 channel, 100 ns access latency, 64 B bursts): the machine exposes the
    first fetch of each layer, each access latency and the contention of its stream engines, none of which
    the phase model's ideal streaming has. Measured ratios instruction/phase: 1 core 1.016-1.025,
    2 cores 1.131-1.142, 3 cores 1.125-1.170."""
    w = resolve(tiny_raw, [f"hardware.cores={cores}", f"scheduler.drs={drs}"])
    job = make_job(w, None if dense else load_trace(w).trace.replay_cube())
    ratio = instruction(job).latency_s / execute(job, "event").latency_s
    assert 1.0 <= ratio <= 1.25, ratio


# -- 7. configuration rules of the machine's options -----------------------------------------------------------


@pytest.mark.parametrize(
    "option,key",
    [
        ("scheduler.dispatch=least_loaded", "scheduler.dispatch"),
        ("scheduler.layer_barrier=false", "scheduler.layer_barrier"),
    ],
)
@pytest.mark.parametrize(
    "where",
    [
        [],  # the default: event mode at phase granularity
        ["simulation.granularity=phase"],
        ["simulation.mode=analytic"],
        ["simulation.mode=analytic", "simulation.granularity=instruction"],
    ],
)
def test_machine_only_options_are_refused_elsewhere(option, key, where):
    with pytest.raises(WorkloadError) as err:
        resolve(copy.deepcopy(TINY), [option, *where])
    msg = str(err.value)
    assert key in msg and "granularity" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("option", ["scheduler.dispatch=least_loaded", "scheduler.layer_barrier=false"])
def test_machine_only_options_are_accepted_at_instruction_granularity(option):
    w = resolve(copy.deepcopy(TINY), [option, "simulation.granularity=instruction"])
    assert w.simulation.granularity == "instruction"


def test_tas_waits_for_every_qkv_block_even_when_the_dispatcher_is_held_back(tiny_raw):
    """With one-instruction queues the dispatcher issues a core's second QKV block only after the first
    has left the queue, so the first can finish before the second is dispatched. The TAS unit must still
    wait for the core's last QKV block: its input is the whole query."""
    # 1 KiB buffers split the tiny model's qkv into 2 blocks of one 64-row tile each.
    w = _compute_bound(tiny_raw, "hardware.queue_depth=1", "hardware.weight_buffer_KiB=1")
    job = make_job(w, load_trace(w).trace.replay_cube())
    machine = Machine(job, timeline_steps=w.video.steps)
    machine.run()
    events = machine.timeline.to_json()["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    qkv_ends = [e["ts"] + e["dur"] for e in spans if e["name"].startswith("qkv[")]
    tas = [e for e in spans if names[(e["pid"], e["tid"])] == "tas"]
    assert len({e["name"] for e in spans if e["name"].startswith("qkv[")}) == 2 and tas
    for t in tas:
        # the last QKV block of the same layer ends before the TAS span starts (same-layer blocks are
        # the ones ending within one layer time before it)
        before = [end for end in qkv_ends if end <= t["ts"] + 1e-9]
        assert before, t
        # no QKV block is still running when TAS starts
        running = [
            e for e in spans if e["name"].startswith("qkv[") and e["ts"] < t["ts"] < e["ts"] + e["dur"] - 1e-6
        ]
        assert not running, (t, running)


@pytest.mark.parametrize("k", [1, 5])
def test_issue_time_shows_only_where_the_sequencer_is_on_the_critical_path(tiny_raw, k):
    # One core, compute bound: every instruction is issued long before the core reaches it, so the
    # sequencer's issue time is hidden except for the SYNC that ends each layer, which is issued once the
    # layer has finished: k cycles per layer-step, and layer_cycles (up to the SYNC) does not move.
    runs = {}
    for cycles in (0, k):
        w = _compute_bound(tiny_raw, "hardware.cores=1", f"hardware.issue_cycles={cycles}")
        v = w.video
        v_replay = np.zeros((v.batch, w.model.layers, v.steps), bool)
        v_replay[1::2, :, v.tokens_per_frame :] = True
        job = make_job(w, v_replay)
        runs[cycles] = (
            run_instructions(job).latency_s * w.hardware.clock_Hz,
            layer_cycles(job, v.steps - 1, 1),
        )
    assert runs[k][0] - runs[0][0] == pytest.approx(k * v.steps * w.model.layers, abs=1e-3)  # float seconds
    assert runs[k][1] == runs[0][1]
