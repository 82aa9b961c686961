"""The instruction sequencer of the top level: it consumes the compiled stream of a decoder layer.

It holds the layer's program (64-bit words of ``accelerator.isa``, written through ``iw_*``), issues one
instruction per cycle (``hardware.issue_cycles`` = 1), and owns what the event model's dispatcher owns
(``accelerator.machine``):

* one bounded queue per engine (cores 0..C-1, the TAS unit, the replay-cache controller) with
  ``hardware.queue_depth`` places; a full queue holds the sequencer (back-pressure). A queue is
  fall-through: a record put while its engine takes one is taken the same cycle;
* the instruction filter and routing: a filtered instruction drops the entries whose index-register bit
  says replay; a ``MAPPED`` one goes, per entry, to the core in its mapping register (the DRS scheduler
  twin, ``drs_scheduler``), else to the static core ``e mod C``; an instruction for several engines puts
  one record per engine in engine order, each as soon as its queue has room;
* the index register (preset by the host where decisions are known in advance, else written by the TAS
  unit's records as they finish) and DRS: wait until every bit is written, scan it, write the mapping;
* the layer's signals: QKV done per core, index bits written per static core, attention (O projection)
  and output (down projection or replay read) per entry, counted against targets the compiler gives
  (``accelerator.machine.expected_counts``); engines read them to know when a record may start;
* SYNC: hold until every record put in this layer has finished; ``layer_done`` then pulses.

``cur_word`` is the instruction at the program counter (a core's stream engine sizes the operand of a
record entering its queue from it).

Engines report through ``take`` (bit r: engine r takes its queue head this cycle if there is one: it is
idle or finishing) and ``fin`` (bit r, registered by the engine: its record finished at this time); the
TAS unit gives its record's bits with ``tas_bits``. Per-engine and per-entry buses are flat: engine r's
head record is ``head_word[64r+63:64r]``, its entries ``put_mask[32r+31:32r]``; entry e's count target
``o_target[COUNT_BITS*(e+1)-1:COUNT_BITS*e]``.

Timing convention: a value "at time t" is a register after edge t. What the event model does at time t
(a record finishes, a signal fires, an engine takes its next record, the sequencer issues) happens here on
signals valid at time t and is registered by edge t + 1; so those handoffs are combinational.
"""

from __future__ import annotations

from dataclasses import dataclass

from myhdl import ConcatSignal, ResetSignal, Signal, always_comb, always_seq, block

from accelerator.isa import MAPPED, MATRICES, Op
from accelerator.rtl.common import bits_for, clock_source, pack, unpack, unsigned_sig, wire
from accelerator.rtl.drs import core_bits, drs_scheduler
from accelerator.rtl.harness import Bench

ENTRIES = 32
WORD = 64
#: Width of a countdown (instructions of one kind per layer: blocks of a matrix, at most a few hundred).
COUNT_BITS = 10
QKV, O_PROJ, DOWN = (MATRICES.index(m) for m in ("qkv", "o", "down"))
GEMV, ATTN, TAS, DRS, REPLAY_RD, REPLAY_WR, SYNC = (
    int(o) for o in (Op.GEMV, Op.ATTN, Op.TAS, Op.DRS, Op.REPLAY_RD, Op.REPLAY_WR, Op.SYNC)
)


def _cat(bits: list) -> Signal:
    """Bits (element 0 lowest) as one bus."""
    return ConcatSignal(*reversed(bits)) if len(bits) > 1 else bits[0]


def _bus(bits: list) -> Signal:
    """A plain signal as wide as ``bits`` together (MyHDL cannot slice a ConcatSignal, so it is copied)."""
    return unsigned_sig(sum(len(b) for b in bits))


@block
def engine_queue(clk, rst, clear, put, word_in, take, head_valid, head_word, room, cur, D):
    """One engine's bounded fall-through queue, and ``cur``: the record the engine took last."""
    mem = [unsigned_sig(WORD) for _ in range(D)]
    head = unsigned_sig(bits_for(D - 1))
    tail = unsigned_sig(bits_for(D - 1))
    count = unsigned_sig(bits_for(D))

    @always_comb
    def front():
        if count > 0:
            head_valid.next = 1
            head_word.next = mem[head]
        else:
            head_valid.next = put
            head_word.next = word_in
        room.next = count < D or (count > 0 and take)
        if head + count >= D:
            tail.next = head + count - D
        else:
            tail.next = head + count

    @always_seq(clk.posedge, reset=rst)
    def store():
        taking = take and (count > 0 or put)
        if taking:
            cur.next = head_word
        if put and not (count == 0 and take):
            mem[tail].next = word_in
        if clear:
            head.next = 0
            count.next = 0
        else:
            if taking and count > 0:
                if head == D - 1:
                    head.next = 0
                else:
                    head.next = head + 1
            if put and not taking:
                count.next = count + 1
            elif taking and not put:
                count.next = count - 1

    return front, store


@block
def route_entry(bit, filt, op, core, idx_bit, routed, mapped, dest, needs_bits, C, E, TAS_R, RC_R):
    """Where entry E of the current instruction goes (one-hot over engines; none if filtered or not in
    the mask), and whether the instruction must wait for E's index bit."""

    @always_comb
    def logic():
        dest.next = 0
        needs_bits.next = bit and (filt or op == REPLAY_RD or op == REPLAY_WR)
        # separate tests, not an if/elif chain on ``core``: MyHDL would turn that into a case statement
        # whose items include the loop variable, which it converts wrongly
        core_op = bit and (op == GEMV or op == ATTN) and (idx_bit or not filt)
        by_map = core == MAPPED
        for r in range(C):
            if core_op and by_map and routed and mapped == r:
                dest.next[r] = 1
            if core_op and by_map and not routed and r == E % C:
                dest.next[r] = 1
            if core_op and not by_map and core == r:
                dest.next[r] = 1
        if bit and op == TAS:
            dest.next[TAS_R] = 1
        if bit and op == REPLAY_RD and not idx_bit:
            dest.next[RC_R] = 1
        if bit and op == REPLAY_WR and idx_bit:
            dest.next[RC_R] = 1

    return logic


@block
def countdown(clk, rst, clear, hit, target, fired):
    """Completions of one kind against their target: ``fired`` once they are all in (this cycle's
    completion included, so a waiter starts on the edge that registers it)."""
    cnt = unsigned_sig(COUNT_BITS)

    @always_comb
    def comb():
        if hit:
            fired.next = cnt + 1 >= target
        else:
            fired.next = cnt >= target

    @always_seq(clk.posedge, reset=rst)
    def seq():
        if clear:
            cnt.next = 0
        elif hit:
            cnt.next = cnt + 1

    return comb, seq


@block
def record_kind(fin, word, is_qkv, o_mask, down_mask):
    """What a core's finishing record completes: a QKV block, or O / down blocks of its entries."""

    @always_comb
    def logic():
        gemv = fin and word[WORD:60] == GEMV
        is_qkv.next = gemv and word[53:51] == QKV
        o_mask.next = word[ENTRIES:0] if gemv and word[53:51] == O_PROJ else 0
        down_mask.next = word[ENTRIES:0] if gemv and word[53:51] == DOWN else 0

    return logic


@block
def or_stage(a, b, s):
    @always_comb
    def logic():
        s.next = a | b

    return logic


def sequencer_ports(cores: int, idepth: int) -> dict:
    r = cores + 2
    return {
        "rst": ResetSignal(0, active=1, isasync=False),
        "iw_we": Signal(bool(0)),
        "iw_addr": unsigned_sig(bits_for(idepth - 1)),
        "iw_data": unsigned_sig(WORD),
        "n_instr": unsigned_sig(bits_for(idepth)),
        "batch": unsigned_sig(6),
        "index0": unsigned_sig(ENTRIES),
        "qkv_target": unsigned_sig(cores * COUNT_BITS),
        "tas_target": unsigned_sig(cores * COUNT_BITS),
        "o_target": unsigned_sig(ENTRIES * COUNT_BITS),
        "down_target": unsigned_sig(ENTRIES * COUNT_BITS),
        "go": Signal(bool(0)),
        "layer_done": Signal(bool(0)),
        "take": unsigned_sig(r),
        "fin": unsigned_sig(r),
        "tas_bits": unsigned_sig(ENTRIES),
        "put": unsigned_sig(r),
        "put_mask": unsigned_sig(r * ENTRIES),
        "head_valid": unsigned_sig(r),
        "head_word": unsigned_sig(r * WORD),
        "qkv_fired": unsigned_sig(cores),
        "attn_fired": unsigned_sig(ENTRIES),
        "out_fired": unsigned_sig(ENTRIES),
        "cur_word": unsigned_sig(WORD),
    }


@block
def sequencer(
    clk,
    rst,
    iw_we,
    iw_addr,
    iw_data,
    n_instr,
    batch,
    index0,
    qkv_target,
    tas_target,
    o_target,
    down_target,
    go,
    layer_done,
    take,
    fin,
    tas_bits,
    put,
    put_mask,
    head_valid,
    head_word,
    qkv_fired,
    attn_fired,
    out_fired,
    cur_word,
    CORES,
    IDEPTH,
    QDEPTH,
):
    C, R = CORES, CORES + 2
    TAS_R, RC_R = CORES, CORES + 1
    CW = core_bits(C)
    insts = []

    imem = [unsigned_sig(WORD) for _ in range(IDEPTH)]
    pc = unsigned_sig(bits_for(IDEPTH))
    word = unsigned_sig(WORD)
    op, core, filt = word(WORD, 60), word(60, 54), word(53)
    mask = word(ENTRIES, 0)
    running, drs_run, routed, clear = (Signal(bool(0)) for _ in range(4))
    put_done = unsigned_sig(R)
    index, index_now, read = (unsigned_sig(ENTRIES) for _ in range(3))
    outstanding = unsigned_sig(16)
    advance, sync_pass = Signal(bool(0)), Signal(bool(0))
    n_put, n_fin = unsigned_sig(16), unsigned_sig(16)  # records put / finished this cycle

    # DRS: the scheduler twin scans the index register as it stands this cycle
    drs_start, drs_busy, drs_done = (Signal(bool(0)) for _ in range(3))
    mapping, map_valid = unsigned_sig(ENTRIES * CW), unsigned_sig(ENTRIES)
    insts.append(
        drs_scheduler(
            clk,
            rst,
            drs_start,
            index_now,
            batch,
            drs_busy,
            drs_done,
            mapping,
            map_valid,
            Signal(bool(0)),
            unsigned_sig(5),
            unsigned_sig(8),
            Signal(bool(0)),
            unsigned_sig(CW),
            unsigned_sig(5),
            unsigned_sig(8),
            unsigned_sig(C),
            CORES=C,
            OP_BITS=8,
        )
    )

    # routing of the current instruction, entry by entry
    dests = [unsigned_sig(R) for _ in range(ENTRIES)]
    needs = [Signal(bool(0)) for _ in range(ENTRIES)]
    for e in range(ENTRIES):
        insts.append(
            route_entry(
                mask(e),
                filt,
                op,
                core,
                index_now(e),
                routed,
                mapping((e + 1) * CW, e * CW),
                dests[e],
                needs[e],
                C=C,
                E=e,
                TAS_R=TAS_R,
                RC_R=RC_R,
            )
        )
    tmasks = []
    for r in range(R):
        bits = [dests[e](r) for e in range(ENTRIES)]
        tmasks.append(_bus(bits))
        insts.append(wire(_cat(bits), tmasks[-1]))
    all_masks = _bus(tmasks)
    insts.append(wire(_cat(tmasks), all_masks))
    wants = [Signal(bool(0)) for _ in range(R)]
    for r in range(R):
        insts.append(_nonzero(tmasks[r], wants[r]))
    want_bus = _bus(wants)
    insts.append(wire(_cat(wants), want_bus))

    # queues, one per engine
    rooms = [Signal(bool(0)) for _ in range(R)]
    heads = [Signal(bool(0)) for _ in range(R)]
    words = [unsigned_sig(WORD) for _ in range(R)]
    curs = [unsigned_sig(WORD) for _ in range(R)]
    routed_words = [unsigned_sig(WORD) for _ in range(R)]
    for r in range(R):
        insts.append(wire(ConcatSignal(word(WORD, ENTRIES), tmasks[r]), routed_words[r]))
        insts.append(
            engine_queue(
                clk,
                rst,
                clear,
                put(r),
                routed_words[r],
                take(r),
                heads[r],
                words[r],
                rooms[r],
                curs[r],
                D=QDEPTH,
            )
        )
    room_bus = _bus(rooms)
    insts.append(wire(_cat(rooms), room_bus))
    head_bus = _bus(heads)
    insts.append(wire(_cat(heads), head_bus))
    word_bus = _bus(words)
    insts.append(wire(_cat(words), word_bus))

    # the layer's signals
    qkv_hits = [Signal(bool(0)) for _ in range(C)]
    o_masks = [unsigned_sig(ENTRIES) for _ in range(C)]
    down_masks = [unsigned_sig(ENTRIES) for _ in range(C)]
    qkv_f = [Signal(bool(0)) for _ in range(C)]
    bits_f = [Signal(bool(0)) for _ in range(C)]
    for c in range(C):
        insts.append(record_kind(fin(c), curs[c], qkv_hits[c], o_masks[c], down_masks[c]))
        t_lo, t_hi = c * COUNT_BITS, (c + 1) * COUNT_BITS
        insts.append(countdown(clk, rst, clear, qkv_hits[c], qkv_target(t_hi, t_lo), qkv_f[c]))
        # a TAS record scores one static group; entry c is in group c, so bit c names the group
        tas_hit = Signal(bool(0))
        insts.append(_and(fin(TAS_R), curs[TAS_R](c), tas_hit))
        insts.append(countdown(clk, rst, clear, tas_hit, tas_target(t_hi, t_lo), bits_f[c]))
    o_any, down_any = o_masks[0], down_masks[0]  # OR over the cores, as a chain of stages
    for c in range(1, C):
        o_next, down_next = unsigned_sig(ENTRIES), unsigned_sig(ENTRIES)
        insts += [or_stage(o_any, o_masks[c], o_next), or_stage(down_any, down_masks[c], down_next)]
        o_any, down_any = o_next, down_next
    attn = [Signal(bool(0)) for _ in range(ENTRIES)]
    down_f = [Signal(bool(0)) for _ in range(ENTRIES)]
    for e in range(ENTRIES):
        t_lo, t_hi = e * COUNT_BITS, (e + 1) * COUNT_BITS
        insts.append(countdown(clk, rst, clear, o_any(e), o_target(t_hi, t_lo), attn[e]))
        insts.append(countdown(clk, rst, clear, down_any(e), down_target(t_hi, t_lo), down_f[e]))
    attn_bus = _bus(attn)
    insts += [wire(_cat(attn), attn_bus), wire(attn_bus, attn_fired)]
    down_bus = _bus(down_f)
    insts.append(wire(_cat(down_f), down_bus))
    qkv_bus = _bus(qkv_f)
    insts += [wire(_cat(qkv_f), qkv_bus), wire(qkv_bus, qkv_fired)]
    bits_bus = _bus(bits_f)
    insts.append(wire(_cat(bits_f), bits_bus))
    needs_bus = _bus(needs)
    insts.append(wire(_cat(needs), needs_bus))
    # an entry's layer output targets: 0 down blocks means it has none in this layer (never waited on)
    has_down = [Signal(bool(0)) for _ in range(ENTRIES)]
    for e in range(ENTRIES):
        insts.append(_nonzero(down_target((e + 1) * COUNT_BITS, e * COUNT_BITS), has_down[e]))
    has_down_bus = _bus(has_down)
    insts.append(wire(_cat(has_down), has_down_bus))
    rc_cur = curs[RC_R]

    @always_comb
    def fetch():
        word.next = imem[pc % IDEPTH]

    @always_comb
    def signals():
        if fin[TAS_R]:
            index_now.next = index | tas_bits
        else:
            index_now.next = index
        if fin[RC_R] and rc_cur[WORD:60] == REPLAY_RD:
            out_fired.next = read | (down_bus & has_down_bus) | rc_cur[ENTRIES:0]
        else:
            out_fired.next = read | (down_bus & has_down_bus)

    @always_comb
    def issue():
        live = running and not drs_run and pc < n_instr
        known = True
        for e in range(ENTRIES):
            if needs_bus[e] and not bits_bus[e % C]:
                known = False
        all_bits = True
        for c in range(C):
            if not bits_bus[c]:
                all_bits = False
        sync_ok = live and op == SYNC and outstanding == n_fin
        sync_pass.next = sync_ok
        drs_start.next = live and op == DRS and all_bits
        blocked = not (live and known and op != SYNC and op != DRS)
        done_all = True
        put.next = 0
        for r in range(R):
            if want_bus[r] and not put_done[r]:
                if blocked or not room_bus[r]:
                    blocked = True  # records go out in engine order: a later engine waits for an earlier one
                    done_all = False
                else:
                    put.next[r] = 1
        advance.next = sync_ok or (live and known and op != SYNC and op != DRS and done_all)

    @always_comb
    def outputs():
        head_valid.next = head_bus
        head_word.next = word_bus
        put_mask.next = all_masks
        cur_word.next = word

    @always_comb
    def begin():
        clear.next = go and not running

    @always_comb
    def counts():
        a = 0
        b = 0
        for r in range(R):
            if put[r]:
                a += 1
            if fin[r]:
                b += 1
        n_put.next = a
        n_fin.next = b

    @always_seq(clk.posedge, reset=rst)
    def state():
        if iw_we:
            imem[iw_addr].next = iw_data
        layer_done.next = sync_pass
        if go and not running:
            running.next = 1
            pc.next = 0
            routed.next = 0
            drs_run.next = 0
            put_done.next = 0
            index.next = index0
            read.next = 0
            outstanding.next = 0
        elif running:
            if drs_start:
                drs_run.next = 1
            if drs_run and drs_done:
                drs_run.next = 0
                routed.next = 1
                pc.next = pc + 1
            if advance:
                pc.next = pc + 1
                put_done.next = 0
                if sync_pass:
                    running.next = 0
            else:
                put_done.next = put_done | put
            index.next = index_now
            if fin[RC_R] and rc_cur[WORD:60] == REPLAY_RD:
                read.next = read | rc_cur[ENTRIES:0]
            outstanding.next = outstanding + n_put - n_fin

    return insts, fetch, signals, issue, outputs, begin, counts, state


@block
def _and(a, b, s):
    @always_comb
    def logic():
        s.next = a and b

    return logic


@block
def _nonzero(a, s):
    @always_comb
    def logic():
        s.next = a != 0

    return logic


@dataclass(frozen=True)
class SequencerParams:
    cores: int = 2
    queue_depth: int = 16
    idepth: int = 64  #: program RAM words

    def kwargs(self) -> dict:
        return {"CORES": self.cores, "IDEPTH": self.idepth, "QDEPTH": self.queue_depth}


class SequencerBench(Bench):
    """The sequencer as a unit (conversion, synthesis); its checks run through :func:`check_layer`."""

    name = "sequencer"

    def ports(self) -> dict:
        return sequencer_ports(self.params.cores, self.params.idepth)

    def module(self):
        return sequencer


# ---------------------------------------------------------------------------------------------------
# Check against the event model: the sequencer runs the layer's compiled stream while its engines take
# and finish records at the cycles the event model's engines did (accelerator.machine.layer_trace); every
# record the sequencer puts must enter the same queue at the same cycle with the same entries, and SYNC
# must pass at the event model's layer time.
# ---------------------------------------------------------------------------------------------------


def layer_registers(trace: dict, batch: int) -> dict:
    """The sequencer's registers for one layer-step of the event model's trace (``layer_trace``)."""
    counts = trace["counts"]
    return {
        "batch": batch,
        "index0": trace["index0"],
        **{f"{k}_target": pack(counts[k], COUNT_BITS) for k in ("qkv", "tas", "o", "down")},
    }


def host_writes(p: dict, words: list[int], regs: dict):
    """Testbench steps of the host before ``go``: the program, one word per clock (a generator the bench
    waits a clock edge on per step), then the registers."""
    for a, w in enumerate(words):
        p["iw_we"].next, p["iw_addr"].next, p["iw_data"].next = 1, a, w
        yield
    p["iw_we"].next = 0
    p["n_instr"].next = len(words)
    for name, value in regs.items():
        p[name].next = value


def check_layer(job, step: int, layer: int, queue_depth: int | None = None) -> dict:
    """Run the sequencer on one layer-step against the event model's trace of it; returns what both did."""
    from myhdl import Simulation, StopSimulation, delay, instance

    from accelerator.compiler import program
    from accelerator.isa import encode
    from accelerator.machine import layer_trace

    trace = layer_trace(job, step, layer)
    cost = job.cost
    words = [encode(i) for i in program(cost, trace["options"])[0]]
    cores, depth = cost.hw.cores, queue_depth or cost.hw.queue_depth
    idepth = 1 << bits_for(len(words))
    clk = Signal(bool(0))
    p = sequencer_ports(cores, idepth)
    dut = sequencer(clk, **p, CORES=cores, IDEPTH=idepth, QDEPTH=depth)
    engines = cores + 2
    by_engine = [[r for r in trace["records"] if r["engine"] == k] for k in range(engines)]
    seen: list[tuple] = []
    out = {"sync": None}

    @instance
    def bench():
        for _ in host_writes(p, words, layer_registers(trace, job.batch)):
            yield clk.posedge
        p["go"].next = 1
        yield clk.posedge  # go sampled: time 0 starts after this edge
        p["go"].next = 0
        taken = [0] * engines
        for t in range(trace["cycles"] + 50):
            take, fin = 0, 0
            for k in range(engines):
                recs = by_engine[k]
                if taken[k] < len(recs) and recs[taken[k]]["taken"] == t:
                    take |= 1 << k
                ending = [r for r in recs if r["end"] == t]
                if ending:
                    fin |= 1 << k
                    if k == cores:
                        p["tas_bits"].next = ending[0]["bits"]
            p["take"].next, p["fin"].next = take, fin
            yield delay(1)
            yield clk.posedge  # edge t + 1 samples time t
            for k in range(engines):
                if p["put"][k]:
                    entries = unpack(int(p["put_mask"]), ENTRIES, engines, signed=False)[k]
                    seen.append((t, k, tuple(e for e in range(ENTRIES) if entries >> e & 1)))
                if take >> k & 1 and p["head_valid"][k]:
                    taken[k] += 1
            if p["layer_done"]:
                out["sync"] = t - 1
                raise StopSimulation
        raise StopSimulation

    Simulation(dut, clock_source(clk), bench).run(quiet=True)
    expected = sorted((r["entered"], r["engine"], tuple(r["entries"])) for r in trace["records"])
    return {"cycles": trace["cycles"], "rtl_cycles": out["sync"], "expected": expected, "got": sorted(seen)}
