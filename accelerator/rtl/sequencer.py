"""The instruction sequencer of the top level: it consumes the compiled stream of a decoder layer.

It holds the layer's program (64-bit words of ``accelerator.isa``, written through ``iw_*``), issues one
instruction per cycle (``hardware.issue_cycles`` = 1), and owns what the event model's dispatcher owns
(``accelerator.machine``):

* one bounded queue per engine (cores 0..C-1, the TAS unit, the replay-cache controller) with
  ``hardware.queue_depth`` places; a full queue holds the sequencer (back-pressure). A queue is
  fall-through: a record put while its engine takes one is taken the same cycle;
* the instruction filter and routing: a filtered instruction drops the entries whose index-register bit
  says replay; a ``MAPPED`` one goes, per entry, to the core in its mapping register (the DRS scheduler
  twin, ``drs_scheduler``), else to the static core ``e mod C``; an instruction for several cores puts
  one record per core in core order, each as soon as its queue has room;
* the index register (preset by the host where decisions are known in advance, else written by the TAS
  unit's records as they finish) and DRS: wait until every bit is written, scan it, write the mapping;
* the layer's signals: QKV done per core, index bits written per static core, attention (O projection)
  and output (down projection or replay read) per entry, counted against targets the compiler gives
  (``accelerator.machine.expected_counts``); engines read them to know when a record may start;
* SYNC: hold until every record put in this layer has finished; ``layer_done`` then pulses.

Engines report through ``take`` (this cycle the engine takes its queue head if there is one: it is idle
or finishing) and ``fin`` (a registered pulse: its record finished at this time), and the TAS unit its
bits with ``tas_bits``. Timing convention: the top level's (``accelerator.rtl.top`` docs): what the event
model does at time t happens here on signals valid at time t (after edge t) and is registered by edge t+1.
"""

from __future__ import annotations

from myhdl import ResetSignal, Signal, always_comb, always_seq, block

from accelerator.isa import MAPPED, MATRICES, Op
from accelerator.rtl.common import bits_for, unsigned_sig
from accelerator.rtl.drs import core_bits, drs_scheduler

ENTRIES = 32
#: Width of a countdown (instructions of one kind per layer: blocks of a matrix, at most a few hundred).
COUNT_BITS = 10
QKV, O_PROJ, DOWN = (MATRICES.index(m) for m in ("qkv", "o", "down"))


def sequencer_ports(cores: int, idepth: int) -> dict:
    engines = cores + 2
    return {
        "rst": ResetSignal(0, active=1, isasync=False),
        "iw_we": Signal(bool(0)),
        "iw_addr": unsigned_sig(bits_for(idepth - 1)),
        "iw_data": unsigned_sig(64),
        "n_instr": unsigned_sig(bits_for(idepth)),
        "batch": unsigned_sig(6),
        "index0": unsigned_sig(ENTRIES),
        "qkv_target": [unsigned_sig(COUNT_BITS) for _ in range(cores)],
        "tas_target": [unsigned_sig(COUNT_BITS) for _ in range(cores)],
        "o_target": [unsigned_sig(COUNT_BITS) for _ in range(ENTRIES)],
        "down_target": [unsigned_sig(COUNT_BITS) for _ in range(ENTRIES)],
        "go": Signal(bool(0)),
        "layer_done": Signal(bool(0)),
        "take": [Signal(bool(0)) for _ in range(engines)],
        "fin": [Signal(bool(0)) for _ in range(engines)],
        "tas_bits": unsigned_sig(ENTRIES),
        "put": [Signal(bool(0)) for _ in range(engines)],
        "put_mask": [unsigned_sig(ENTRIES) for _ in range(engines)],
        "head_valid": [Signal(bool(0)) for _ in range(engines)],
        "head_word": [unsigned_sig(64) for _ in range(engines)],
        "qkv_fired": [Signal(bool(0)) for _ in range(cores)],
        "attn_fired": unsigned_sig(ENTRIES),
        "out_fired": unsigned_sig(ENTRIES),
        "drs_started": Signal(bool(0)),
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
    drs_started,
    CORES,
    IDEPTH,
    QDEPTH,
):
    C, R, D = CORES, CORES + 2, QDEPTH
    TAS_R, RC_R = CORES, CORES + 1
    CW = core_bits(C)
    QB = bits_for(D)

    imem = [unsigned_sig(64) for _ in range(IDEPTH)]
    pc = unsigned_sig(bits_for(IDEPTH))
    running, drs_run, routed = (Signal(bool(0)) for _ in range(3))
    put_done = unsigned_sig(R)  # engines the current instruction has been put to already
    index = unsigned_sig(ENTRIES)
    read = unsigned_sig(ENTRIES)  # entries whose cached output has been read (their layer output)
    outstanding = unsigned_sig(16)
    qkv_cnt = [unsigned_sig(COUNT_BITS) for _ in range(C)]
    tas_cnt = [unsigned_sig(COUNT_BITS) for _ in range(C)]
    o_cnt = [unsigned_sig(COUNT_BITS) for _ in range(ENTRIES)]
    down_cnt = [unsigned_sig(COUNT_BITS) for _ in range(ENTRIES)]
    qmem = [[unsigned_sig(64) for _ in range(D)] for _ in range(R)]
    qhead = [unsigned_sig(QB) for _ in range(R)]
    qcount = [unsigned_sig(QB + 1) for _ in range(R)]
    cur = [unsigned_sig(64) for _ in range(R)]  # the record each engine holds

    # combinational view of time t
    index_now = unsigned_sig(ENTRIES)
    bits_fired = [Signal(bool(0)) for _ in range(C)]
    tmask = put_mask  # the current instruction's record per engine (its entries), put or not
    advance, sync_pass = Signal(bool(0)), Signal(bool(0))

    drs_start, drs_busy, drs_done = (Signal(bool(0)) for _ in range(3))
    mapping, map_valid = unsigned_sig(ENTRIES * CW), unsigned_sig(ENTRIES)
    drs = drs_scheduler(
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

    def fields(w):
        return int(w[64:60]), int(w[60:54]), bool(w[53]), int(w[53:51]), int(w[32:0])

    @always_comb
    def signals():
        """Completions at time t and the signals they fire (a register and this cycle's pulses)."""
        now = int(index)
        if fin[TAS_R]:
            now |= int(tas_bits)
        index_now.next = now
        for c in range(C):
            op, _, _, m, _ = fields(cur[c])
            qkv_fired[c].next = qkv_cnt[c] + int(fin[c] and op == Op.GEMV and m == QKV) >= qkv_target[c]
            low = int(cur[TAS_R][32:0])
            first = (low & -low).bit_length() - 1
            mine = fin[TAS_R] and first % C == c
            bits_fired[c].next = tas_cnt[c] + int(mine) >= tas_target[c]
        attn, out = 0, int(read)
        rop, _, _, _, rmask = fields(cur[RC_R])
        if fin[RC_R] and rop == Op.REPLAY_RD:
            out |= rmask
        for e in range(ENTRIES):
            o_now, down_now = 0, 0
            for c in range(C):
                op, _, _, m, mask = fields(cur[c])
                if fin[c] and op == Op.GEMV and mask >> e & 1:
                    o_now += int(m == O_PROJ)
                    down_now += int(m == DOWN)
            if o_cnt[e] + o_now >= o_target[e]:
                attn |= 1 << e
            if down_target[e] and down_cnt[e] + down_now >= down_target[e]:
                out |= 1 << e
        attn_fired.next = attn
        out_fired.next = out

    @always_comb
    def route():
        """The current instruction's record per engine: filter, then the routing."""
        op, core, filt, _, mask = fields(imem[int(pc) % IDEPTH])
        now = int(index_now)
        masks = [0] * R
        if op in (Op.GEMV, Op.ATTN):
            if filt:
                mask &= now
            for e in range(ENTRIES):
                if mask >> e & 1:
                    if core != MAPPED:
                        c = core
                    elif routed:
                        c = int(mapping[(e + 1) * CW : e * CW])
                    else:
                        c = e % C
                    masks[c] |= 1 << e
        elif op == Op.TAS:
            masks[TAS_R] = mask
        elif op == Op.REPLAY_RD:
            masks[RC_R] = mask & ~now & ((1 << ENTRIES) - 1)
        elif op == Op.REPLAY_WR:
            masks[RC_R] = mask & now
        for r in range(R):
            tmask[r].next = masks[r]

    @always_comb
    def issue():
        """What the sequencer does at time t: put records (as far as queues have room), start DRS, pass
        SYNC, and whether pc moves on."""
        word = imem[int(pc) % IDEPTH]
        op, _, filt, _, mask = fields(word)
        live = running and not drs_run and pc < n_instr
        known = True
        if filt or op in (Op.REPLAY_RD, Op.REPLAY_WR):
            for e in range(ENTRIES):
                if mask >> e & 1 and not bits_fired[e % C]:
                    known = False
        all_bits = all(bool(bits_fired[c]) for c in range(C))
        fins = sum(int(fin[r]) for r in range(R))
        sync_ok = live and op == Op.SYNC and int(outstanding) == fins
        sync_pass.next = sync_ok
        drs_start.next = live and op == Op.DRS and all_bits
        blocked = not (live and known and op not in (Op.SYNC, Op.DRS))
        done_all = True
        for r in range(R):
            want = tmask[r] != 0 and not put_done[r]
            room = qcount[r] < D or (qcount[r] > 0 and take[r])
            p = want and not blocked and room
            put[r].next = p
            if want and not p:
                blocked = True  # records go out in engine order: a later engine waits for an earlier one
                done_all = False
        adv = live and known and op not in (Op.SYNC, Op.DRS) and done_all
        advance.next = adv or sync_ok

    @always_comb
    def heads():
        for r in range(R):
            if qcount[r] > 0:
                head_valid[r].next = 1
                head_word[r].next = qmem[r][int(qhead[r])]
            else:
                head_valid[r].next = put[r]
                head_word[r].next = (int(imem[int(pc) % IDEPTH]) >> 32 << 32) | int(tmask[r])

    @always_seq(clk.posedge, reset=rst)
    def state():
        if iw_we:
            imem[int(iw_addr)].next = iw_data
        drs_started.next = drs_start
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
            for c in range(C):
                qkv_cnt[c].next = 0
                tas_cnt[c].next = 0
            for e in range(ENTRIES):
                o_cnt[e].next = 0
                down_cnt[e].next = 0
            return
        if not running:
            return
        # the sequencer
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
            pd = int(put_done)
            for r in range(R):
                if put[r]:
                    pd |= 1 << r
            put_done.next = pd
        # completions
        index.next = index_now
        if fin[RC_R]:
            rop, _, _, _, rmask = fields(cur[RC_R])
            if rop == Op.REPLAY_RD:
                read.next = read | rmask
        for c in range(C):
            op, _, _, m, _ = fields(cur[c])
            if fin[c] and op == Op.GEMV and m == QKV:
                qkv_cnt[c].next = qkv_cnt[c] + 1
        if fin[TAS_R]:
            low = int(cur[TAS_R][32:0])
            first = (low & -low).bit_length() - 1
            tas_cnt[first % C].next = tas_cnt[first % C] + 1
        for e in range(ENTRIES):
            o_now, down_now = 0, 0
            for c in range(C):
                op, _, _, m, mask = fields(cur[c])
                if fin[c] and op == Op.GEMV and mask >> e & 1:
                    o_now += int(m == O_PROJ)
                    down_now += int(m == DOWN)
            o_cnt[e].next = o_cnt[e] + o_now
            down_cnt[e].next = down_cnt[e] + down_now
        # queues
        puts, fins = 0, 0
        for r in range(R):
            puts += int(put[r])
            fins += int(fin[r])
            n = int(qcount[r])
            h = int(qhead[r])
            taking = take[r] and (n > 0 or put[r])
            if taking:
                cur[r].next = head_word[r]
            if put[r] and not (n == 0 and taking):
                qmem[r][(h + n) % D].next = (
                    head_word[r] if n == 0 else ((int(imem[int(pc) % IDEPTH]) >> 32 << 32) | int(tmask[r]))
                )
            if taking and n > 0:
                qhead[r].next = (h + 1) % D
            qcount[r].next = n + int(put[r]) - int(taking)
        outstanding.next = outstanding + puts - fins

    return drs, signals, route, issue, heads, state


# ---------------------------------------------------------------------------------------------------
# Check against the event model: the sequencer runs the layer's compiled stream while its engines take
# and finish records at the cycles the event model's engines did (accelerator.machine.layer_trace); every
# record the sequencer puts must enter the same queue at the same cycle with the same entries, and SYNC
# must pass at the event model's layer time.
# ---------------------------------------------------------------------------------------------------


def check_layer(job, step: int, layer: int, queue_depth: int | None = None) -> dict:
    """Run the sequencer on one layer-step against the event model's trace of it; returns what both did."""
    from myhdl import Simulation, StopSimulation, delay, instance

    from accelerator.compiler import program
    from accelerator.isa import encode
    from accelerator.machine import layer_trace

    trace = layer_trace(job, step, layer)
    cost, opts = job.cost, trace["options"]
    words = [encode(i) for i in program(cost, opts)[0]]
    cores, depth = cost.hw.cores, queue_depth or cost.hw.queue_depth
    idepth = 1 << bits_for(len(words))
    clk = Signal(bool(0))
    p = sequencer_ports(cores, idepth)
    dut = sequencer(clk, **p, CORES=cores, IDEPTH=idepth, QDEPTH=depth)
    engines = cores + 2
    by_engine = [[r for r in trace["records"] if r["engine"] == k] for k in range(engines)]
    seen: list[dict] = []
    out = {"sync": None}
    limit = trace["cycles"] + 50

    @instance
    def clock():
        while True:
            yield delay(5)
            clk.next = not clk

    @instance
    def bench():
        for a, w in enumerate(words):
            p["iw_we"].next, p["iw_addr"].next, p["iw_data"].next = 1, a, w
            yield clk.posedge
        p["iw_we"].next = 0
        p["n_instr"].next = len(words)
        p["batch"].next = job.batch
        p["index0"].next = trace["index0"]
        counts = trace["counts"]
        for c in range(cores):
            p["qkv_target"][c].next = counts["qkv"][c]
            p["tas_target"][c].next = counts["tas"][c]
        for e in range(job.batch):
            p["o_target"][e].next = counts["o"][e]
            p["down_target"][e].next = counts["down"][e]
        p["go"].next = 1
        yield clk.posedge  # go sampled: time 0 starts after this edge
        p["go"].next = 0
        taken = [0] * engines
        for t in range(limit):
            # drive time t: takes (combinational) and finishes (valid during time t)
            for k in range(engines):
                recs = by_engine[k]
                p["take"][k].next = taken[k] < len(recs) and recs[taken[k]]["taken"] == t
                ending = [r for r in recs if r["end"] == t]
                p["fin"][k].next = bool(ending)
                if k == cores and ending:
                    p["tas_bits"].next = ending[0]["bits"]
            yield delay(1)
            yield clk.posedge  # edge t + 1 samples time t
            for k in range(engines):
                if p["put"][k]:
                    seen.append({"engine": k, "entered": t, "entries": _bits(int(p["put_mask"][k]))})
                if p["take"][k] and p["head_valid"][k]:
                    taken[k] += 1
            if p["layer_done"]:
                out["sync"] = t - 1
                raise StopSimulation
        raise StopSimulation

    Simulation(dut, clock, bench).run(quiet=True)
    expected = sorted((r["entered"], r["engine"], tuple(r["entries"])) for r in trace["records"])
    got = sorted((r["entered"], r["engine"], tuple(r["entries"])) for r in seen)
    return {"cycles": trace["cycles"], "rtl_cycles": out["sync"], "expected": expected, "got": got}


def _bits(mask: int) -> list[int]:
    return [e for e in range(ENTRIES) if mask >> e & 1]
