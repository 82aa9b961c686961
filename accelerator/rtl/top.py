"""The integrated top level: the sequencer and the engines it feeds, as one machine (MyHDL).

```
 program RAM ──> sequencer (queues, filter, DRS twin, signals, SYNC)
                   │ take/fin           │                 │
     core engine 0..C-1: stream engine + gemv_tile   TAS engine + tas_unit   replay engine + replay_cache_ctrl
                   │ mem_req/mem_done   │                 │
                   └──────────────> memory (testbench model: top_bench.memory_model)
```

It executes the compiled stream of one decoder layer with the structure of the instruction-level event
model (``accelerator.machine``), and every duration comes from a unit twin doing its job: ``gemv_tile``
runs each entry of a GEMV and each head's scores and values of an ATTN, ``tas_unit`` scores each entry,
``replay_cache_ctrl`` moves each cached output, ``drs_scheduler`` scans the index register. The memory
behind the request ports (valid/ready requests of a number of bytes, a ``mem_done`` pulse when the data is
in) is a testbench model with configurable bandwidth and latency.

Engines (the event model's rules, as hardware):

* a core's stream engine fetches the operand (weight block, or an entry's keys and values) of each record
  as it enters the core's queue, in order, while one of ``WBUFS`` operand buffers is free; a buffer is
  freed when its record finishes; the TAS engine fetches a record's aligned keys as it enters its queue;
* an engine takes its next record when it is idle or finishing, and starts it once its operand is in and
  the signals it waits for have fired (TAS: its core's QKV; the first ``up`` block: the attention of its
  entries; a replay write: the outputs it stores);
* GEMV: one tile job per entry (rows of the block x the matrix's columns), back to back, and the record
  ends when the output writer has written the last outputs; ATTN: per head, scores (keys x head_dim) then
  values (head_dim x keys) with the weights from the softmax unit, the values once the output writer is
  idle, the next head's scores as soon as the values end, and the record ends when the last head's
  outputs are written;
* TAS and a replay write: the unit starts one cycle after the record (its first beat is read); TAS and
  replay run one unit job per entry, back to back; a replay record's transfer starts with it and the record
  ends when both are done.

The data path (``accelerator.rtl.datapath``, ``accelerator.rtl.softmax``) computes the layer of
``accelerator.rtl.layer_numerics``: the memories (operand buffers, activation memory, TAS key buffer,
replay cache) are the testbench's, behind the ports. GEMV inputs are assumed written by the previous
phase (the bench refuses a layer where the cost model charges an exposed input write for a GEMV).

Timing convention: ``accelerator.rtl.sequencer``'s (what the event model does at time t is on signals
valid after edge t and registered by edge t + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from myhdl import ConcatSignal, Signal, always_comb, always_seq, block, intbv

from accelerator.rtl.common import bits_for, signed_sig, unsigned_sig, wire
from accelerator.rtl.datapath import (
    SHIFT_BITS,
    WORD_BITS,
    ActLayout,
    output_writer,
    replay_reader,
    replay_writer,
    tas_reader,
)
from accelerator.rtl.layer_numerics import EXP_BITS
from accelerator.rtl.pe_lane import gemv_tile
from accelerator.rtl.replay_cache import replay_cache_ctrl
from accelerator.rtl.sequencer import ATTN, ENTRIES, GEMV, REPLAY_WR, WORD, sequencer
from accelerator.rtl.softmax import QUOTIENT_BITS, softmax_unit
from accelerator.rtl.tas_unit import TasParams, tas_unit

BYTES_BITS = 32
UP = 2  # matrix index of "up" (accelerator.isa.MATRICES)


@dataclass(frozen=True)
class TopParams:
    """Elaboration parameters of the top level (the machine's build; per-layer values are ports)."""

    cores: int
    lanes: int
    pipeline_cycles: int
    queue_depth: int
    weight_buffers: int
    idepth: int  # program RAM words
    max_cols: int  # tile input-buffer depth
    row_bits: int
    block_rows: tuple[int, ...]  # per (matrix, block): rows, flat matrix * max_blocks + block
    block_bytes: tuple[int, ...]  # per (matrix, block): bytes of the weight block
    matrix_cols: tuple[int, ...]
    max_blocks: int
    heads: int
    kv_heads: int
    head_dim: int
    max_keys: int  # the most keys a head attends to (the softmax unit's score memory)
    score_bits: int  # one attention score (the scores job's accumulator)
    tas_lanes: int
    tas_bytes: int  # one entry's aligned key
    replay_words: int
    replay_word_bits: int
    replay_port_bits: int
    replay_bytes: int  # one cached output
    group_weights: int  # memory channel of each kind of transfer
    group_kv: int
    group_replay: int
    block_row0: tuple[int, ...]  # per (matrix, block): its first row in the matrix
    layout: ActLayout  # the activation memory
    port: int  # elements per cycle of the output writer (input_write_elems_per_cycle)
    act_bits: int
    w_bits: int  # tile weight lanes (the wider of the weight and KV precisions)
    acc_bits: int

    @property
    def tas(self) -> TasParams:
        """The TAS unit of the top level (16-bit query and key lanes)."""
        return TasParams(heads=self.heads, head_dim=self.head_dim, lanes=self.tas_lanes)

    @property
    def row0_bits(self) -> int:
        """A row of any matrix (the writer's row counter)."""
        L = self.layout
        return bits_for(max(L.q_dim + 2 * L.kv_dim, L.hidden, 2 * L.mlp) + self.lanes)


IDLE, HOLD, RUN, PRE = 0, 1, 2, 3  # PRE: a replay record started, its controller not yet


@block
def lowest_entries(a_bits, b_bits, a_low, b_low, a_count):
    """The lowest entry of two entry masks (a record's, the ones still to run), and how many ``a`` has."""

    @always_comb
    def scan():
        a = 0
        b = 0
        n = 0
        found_a = False
        found_b = False
        for e in range(ENTRIES):
            if a_bits[e]:
                n += 1
                if not found_a:
                    a = e
                    found_a = True
            if b_bits[e] and not found_b:
                b = e
                found_b = True
        a_low.next = a
        b_low.next = b
        a_count.next = n

    return scan


@block
def block_index(word, index, NB):
    """Flat (matrix, block) index of a GEMV instruction word, into the per-block tables."""

    @always_comb
    def lookup():
        index.next = word[53:51] * NB + word[51:32]

    return lookup


@block
def tile_input(from_p, p, x, out):
    """The tile's broadcast input: the softmax weights during a values job, else the activation memory."""

    @always_comb
    def select():
        if from_p:
            out.next = p
        else:
            out.next = x

    return select


@block
def address_add(base, offset, addr):
    @always_comb
    def add():
        addr.next = base + offset

    return add


@block
def core_engine(
    clk,
    rst,
    clear,
    put,
    word_in,
    head_valid,
    head_word,
    take,
    fin,
    attn_fired,
    req_valid,
    req_bytes,
    req_group,
    mem_done,
    t_start,
    t_rows,
    t_cols,
    t_busy,
    keys,
    k_beats,
    v_beats,
    kv_bytes,
    req_word,
    w_slot,
    w_base,
    job_gemv,
    job_att,
    att_scores,
    v_start,
    job_matrix,
    job_row0,
    job_rows,
    job_entry,
    x_base,
    w_idle,
    P: TopParams,
):
    """A core: its operand fetches, and the records it runs on its tile. ``req_word`` names the operand
    of a fetch (the record's instruction); fetch k goes to operand buffer k mod ``weight_buffers``, and
    ``w_slot`` is the buffer of the running record, ``w_base`` the first beat of the tile job's operand in
    it (an ATTN operand holds, per key/value head, ``k_beats`` of keys then ``v_beats`` of values).
    ``job_*`` and ``x_base`` describe the tile job for the output writer and the input read; ``att_scores``
    and ``v_start`` drive the softmax unit."""
    D = P.queue_depth + 1
    NB = P.max_blocks
    ROWS, BYTES, COLS = P.block_rows, P.block_bytes, P.matrix_cols
    CB = bits_for(P.max_cols)
    # operand fetches: records that entered the queue while no buffer was free wait here, in order
    pend = [unsigned_sig(BYTES_BITS) for _ in range(D)]
    pend_kv = [Signal(bool(0)) for _ in range(D)]
    pend_word = [unsigned_sig(WORD) for _ in range(D)]
    WB = P.weight_buffers
    tk_slot, hold_slot = unsigned_sig(bits_for(WB)), unsigned_sig(bits_for(WB))
    ROW0 = P.block_row0
    L = P.layout
    S = L.stride
    OX, OQKV, OATT, OH, OGU = (L.offset(r) for r in ("x", "qkv", "att", "h", "gu"))
    index_r = unsigned_sig(bits_for(NB * 4))
    todo = unsigned_sig(ENTRIES)
    cand_low, todo_low = unsigned_sig(5), unsigned_sig(5)
    ebase = unsigned_sig(L.addr_bits)
    p_head, p_count = unsigned_sig(bits_for(D)), unsigned_sig(bits_for(D))
    issued, freed, loaded, taken = (unsigned_sig(16) for _ in range(4))
    in_bytes, word_bytes = unsigned_sig(BYTES_BITS), unsigned_sig(BYTES_BITS)
    index_w, index_c = unsigned_sig(bits_for(NB * 4)), unsigned_sig(bits_for(NB * 4))
    # the record the engine holds or runs
    st = unsigned_sig(2)
    rec = unsigned_sig(WORD)
    cand = unsigned_sig(WORD)
    cand_rows, cand_cols = unsigned_sig(P.row_bits), unsigned_sig(CB)
    cur_rows, cur_cols = unsigned_sig(P.row_bits), unsigned_sig(CB)
    left = unsigned_sig(bits_for(max(ENTRIES, P.heads)))  # GEMV: entries still to run; ATTN: heads
    part_values = Signal(bool(0))  # ATTN: the tile job started last was a head's values
    G = P.heads // P.kv_heads  # query heads per key/value head
    head, in_group = unsigned_sig(bits_for(P.heads)), unsigned_sig(bits_for(G))
    kv_base = unsigned_sig(32)  # ATTN: first beat of the current key/value head's keys
    finishing, taking, start_rec, next_job = (Signal(bool(0)) for _ in range(4))
    n_entries = unsigned_sig(6)

    @always_comb
    def rom_bytes():
        word_bytes.next = BYTES[index_w]

    @always_comb
    def rom_rows():
        cand_rows.next = ROWS[index_c]

    @always_comb
    def rom_cols():
        cand_cols.next = COLS[cand[53:51]]

    @always_comb
    def rom_row0():
        if rec[WORD:60] == GEMV:
            job_row0.next = ROW0[index_r]
        else:
            job_row0.next = head * P.head_dim

    @always_comb
    def job_view():
        job_gemv.next = st == RUN and rec[WORD:60] == GEMV
        job_att.next = st == RUN and rec[WORD:60] == ATTN and part_values
        att_scores.next = st == RUN and rec[WORD:60] == ATTN and not part_values
        job_matrix.next = rec[53:51]
        if rec[WORD:60] == GEMV:
            job_rows.next = cur_rows
        else:
            job_rows.next = P.head_dim
        ebase.next = job_entry * S

    @always_comb
    def input_base():
        if rec[WORD:60] != GEMV:
            x_base.next = ebase + OQKV + head * P.head_dim  # the head's query (a scores job's input)
        elif rec[53:51] == 0:
            x_base.next = ebase + OX
        elif rec[53:51] == 1:
            x_base.next = ebase + OATT
        elif rec[53:51] == 2:
            x_base.next = ebase + OH
        else:
            x_base.next = ebase + OGU + L.mlp

    @always_comb
    def entering():
        if word_in[WORD:60] == GEMV:
            in_bytes.next = word_bytes
        else:
            in_bytes.next = kv_bytes

    @always_comb
    def ending():
        """At this time: does the running record end, or its next tile job start? (Registers only: the
        engine's combinational blocks are split so that no block both reads the sequencer's outputs and
        drives what the sequencer reads.)"""
        between = st == RUN and not t_busy  # the tile finished its job (now or earlier)
        f = False
        nj = False
        if between:
            if rec[WORD:60] == GEMV:
                if left > 0:
                    nj = True
                else:
                    f = bool(w_idle)  # the instruction ends when its last outputs are written
            elif not part_values:
                nj = bool(w_idle)  # the values, once the previous head's outputs are written
            elif left > 0:
                nj = True  # the next head's scores (this head's outputs drain meanwhile)
            else:
                f = bool(w_idle)
        finishing.next = f
        next_job.next = nj
        v_start.next = nj and rec[WORD:60] == ATTN and not part_values

    @always_comb
    def taker():
        take.next = st == IDLE or finishing

    @always_comb
    def choose():
        """Which record would start now, and may it: its operand is in and its inputs are written."""
        tk = (st == IDLE or finishing) and head_valid
        taking.next = tk
        if st == HOLD:
            cand.next = rec
        else:
            cand.next = head_word
        ok = True  # the candidate's operand is in (it is fetch number ``taken`` - 1 when held)
        if st == HOLD:
            if loaded + mem_done < taken:
                ok = False
        elif loaded + mem_done < taken + 1:
            ok = False
        if cand[WORD:60] == GEMV and cand[53:51] == UP and cand[51:32] == 0:
            for e in range(ENTRIES):
                if cand[e] and not attn_fired[e]:
                    ok = False
        start_rec.next = (st == HOLD or tk) and ok

    @always_comb
    def tile():
        t_start.next = 0
        t_rows.next = 0
        t_cols.next = 0
        if start_rec:
            t_start.next = 1
            if cand[WORD:60] == GEMV:
                t_rows.next = cand_rows
                t_cols.next = cand_cols
            else:
                t_rows.next = keys
                t_cols.next = P.head_dim
        elif next_job:
            t_start.next = 1
            if rec[WORD:60] == GEMV:
                t_rows.next = cur_rows
                t_cols.next = cur_cols
            elif not part_values:
                t_rows.next = P.head_dim
                t_cols.next = keys
            else:
                t_rows.next = keys
                t_cols.next = P.head_dim

    @always_comb
    def fetch():
        free = P.weight_buffers - (issued - freed)
        if finishing:
            free = free + 1
        if p_count > 0:
            req_bytes.next = pend[p_head]
            req_word.next = pend_word[p_head]
            req_valid.next = free > 0
            if pend_kv[p_head]:
                req_group.next = P.group_kv
            else:
                req_group.next = P.group_weights
        else:
            req_bytes.next = in_bytes
            req_word.next = word_in
            req_valid.next = put and free > 0
            if word_in[WORD:60] == GEMV:
                req_group.next = P.group_weights
            else:
                req_group.next = P.group_kv

    @always_comb
    def done_out():
        fin.next = finishing

    @always_seq(clk.posedge, reset=rst)
    def state():
        if clear:
            p_head.next = 0
            p_count.next = 0
            tk_slot.next = 0
            issued.next = 0
            freed.next = 0
            loaded.next = 0
            taken.next = 0
            st.next = IDLE
        else:
            if mem_done:
                loaded.next = loaded + 1
            if finishing:
                freed.next = freed + 1
            if req_valid:
                issued.next = issued + 1
            # pending fetches: pop the one issued, push the entering record if it was not issued
            if req_valid and p_count > 0:
                if p_head == D - 1:
                    p_head.next = 0
                else:
                    p_head.next = p_head + 1
            if put and (p_count > 0 or not req_valid):
                slot = p_head + p_count
                if slot >= D:
                    slot = slot - D
                pend[slot].next = in_bytes
                pend_kv[slot].next = word_in[WORD:60] == ATTN
                pend_word[slot].next = word_in
            if put and (p_count > 0 or not req_valid):
                if not (req_valid and p_count > 0):
                    p_count.next = p_count + 1
            elif req_valid and p_count > 0:
                p_count.next = p_count - 1
            # records
            if taking:
                taken.next = taken + 1
                hold_slot.next = tk_slot
                if tk_slot == WB - 1:
                    tk_slot.next = 0
                else:
                    tk_slot.next = tk_slot + 1
            if start_rec:
                st.next = RUN
                rec.next = cand
                if st == HOLD:
                    w_slot.next = hold_slot
                else:
                    w_slot.next = tk_slot
                job_entry.next = cand_low
                todo.next = cand[ENTRIES:0] & ~(1 << int(cand_low))
                w_base.next = 0
                if cand[WORD:60] == GEMV:
                    left.next = n_entries - 1
                    cur_rows.next = cand_rows
                    cur_cols.next = cand_cols
                else:
                    left.next = P.heads - 1
                    part_values.next = 0
                    head.next = 0
                    in_group.next = 0
                    kv_base.next = 0
            elif taking:
                st.next = HOLD
                rec.next = head_word
            elif finishing:
                st.next = IDLE
            elif next_job:
                if rec[WORD:60] == GEMV:
                    left.next = left - 1
                    job_entry.next = todo_low
                    todo.next = todo & ~(1 << int(todo_low))
                elif not part_values:
                    part_values.next = 1
                    w_base.next = kv_base + k_beats
                else:
                    part_values.next = 0
                    left.next = left - 1
                    head.next = head + 1
                    if in_group == G - 1:
                        in_group.next = 0
                        kv_base.next = kv_base + k_beats + v_beats
                        w_base.next = kv_base + k_beats + v_beats
                    else:
                        in_group.next = in_group + 1
                        w_base.next = kv_base

    return (
        lowest_entries(cand, todo, cand_low, todo_low, n_entries),
        block_index(word_in, index_w, NB),
        rom_bytes,
        block_index(rec, index_r, NB),
        rom_row0,
        job_view,
        input_base,
        block_index(cand, index_c, NB),
        rom_rows,
        rom_cols,
        entering,
        ending,
        taker,
        choose,
        tile,
        fetch,
        done_out,
        state,
    )


@block
def unit_engine(
    clk,
    rst,
    clear,
    put,
    word_in,
    head_valid,
    head_word,
    take,
    fin,
    bits,
    qkv_fired,
    attn_all,
    out_fired,
    req_valid,
    req_bytes,
    mem_done,
    u_start,
    u_entry,
    u_write,
    u_busy,
    u_done,
    u_replay,
    w_idle,
    pre_out,
    next_entry,
    ENTRY_BYTES,
    CORES,
    IS_TAS,
):
    """The TAS unit's or the replay-cache controller's engine. The replay-cache controller's record starts
    its transfer as it starts and its unit runs one job per entry, back to back; the record ends when both
    are done and its data is written (``w_idle``). The TAS unit fetches a record's aligned keys as the
    record enters its queue (``put``, ``word_in``) and starts the record once they are in. A TAS record and
    a replay write start their unit one cycle after the record, in which the first beat is read
    (``pre_out``). The TAS engine's ``bits`` are the index-register bits of the record's computing entries
    (valid with ``fin``)."""
    UNGATED = bool(IS_TAS)  # the TAS unit's jobs wait for nothing but their record
    st = unsigned_sig(2)
    rec, cand = unsigned_sig(WORD), unsigned_sig(WORD)
    todo = unsigned_sig(ENTRIES)  # entries whose unit job has not started
    acc = unsigned_sig(ENTRIES)  # TAS: bits of the entries scored so far
    last = unsigned_sig(5)  # the entry of the unit's current job
    xfer_done = Signal(bool(0))
    finishing, taking, start_rec, next_job = (Signal(bool(0)) for _ in range(4))
    cand_low, todo_low = unsigned_sig(5), unsigned_sig(5)
    n_cand, n_in = unsigned_sig(6), unsigned_sig(6)
    loaded, started = unsigned_sig(16), unsigned_sig(16)  # TAS: key fetches completed, records started

    lowest = lowest_entries(cand, todo, cand_low, todo_low, n_cand)
    entering = lowest_entries(word_in, word_in, unsigned_sig(5), unsigned_sig(5), n_in)

    @always_comb
    def ending():
        between = st == RUN and not u_busy
        transferred = IS_TAS or xfer_done or mem_done  # a TAS record's keys were in before it started
        finishing.next = between and todo == 0 and transferred and w_idle
        next_job.next = between and todo != 0
        next_entry.next = todo_low

    @always_comb
    def taker():
        take.next = st == IDLE or finishing

    @always_comb
    def choose():
        tk = (st == IDLE or finishing) and head_valid
        taking.next = tk
        if st == HOLD or st == PRE:
            cand.next = rec
        else:
            cand.next = head_word
        ok = True
        if IS_TAS:
            for c in range(CORES):
                if cand[c] and not qkv_fired[c]:  # a TAS record scores static group c, which holds entry c
                    ok = False
            if loaded + mem_done <= started:  # its keys are not in yet
                ok = False
        elif cand[WORD:60] == REPLAY_WR:
            for e in range(ENTRIES):
                if cand[e] and not out_fired[e]:
                    ok = False
        start_rec.next = (st == HOLD or tk) and ok

    @always_comb
    def drive():
        # the controller waits a cycle after a replay write's start (its first beat is read), and a replay
        # read's controller waits for every entry's h (it forms y = h + d); the transfer does not
        writing = cand[WORD:60] == REPLAY_WR
        prefetching = writing or IS_TAS  # the unit's first beat is read in the record's first cycle
        pre_out.next = start_rec and prefetching
        may_start = writing or attn_all or UNGATED
        u_start.next = (start_rec and not prefetching and may_start) or (st == PRE and may_start) or next_job
        if start_rec or st == PRE:
            u_entry.next = cand_low
        else:
            u_entry.next = todo_low
        if start_rec:
            u_write.next = cand[WORD:60] == REPLAY_WR
        else:
            u_write.next = rec[WORD:60] == REPLAY_WR
        if IS_TAS:
            req_valid.next = put
            req_bytes.next = n_in * ENTRY_BYTES
        else:
            req_valid.next = start_rec
            req_bytes.next = n_cand * ENTRY_BYTES

    @always_comb
    def report():
        fin.next = finishing
        if u_done and not u_replay and IS_TAS:
            bits.next = acc | (1 << int(last))
        else:
            bits.next = acc

    @always_seq(clk.posedge, reset=rst)
    def state():
        if clear:
            st.next = IDLE
            loaded.next = 0
            started.next = 0
        else:
            if IS_TAS and mem_done:
                loaded.next = loaded + 1
            if start_rec:
                started.next = started + 1
            if u_done and not u_replay and IS_TAS:
                acc.next = acc | (1 << int(last))
            if mem_done:
                xfer_done.next = 1
            if start_rec:
                rec.next = cand
                acc.next = 0
                xfer_done.next = 0
                if u_start:
                    st.next = RUN
                    todo.next = cand[ENTRIES:0] & ~(1 << int(cand_low))
                    last.next = cand_low
                else:
                    st.next = PRE
            elif st == PRE and u_start:
                st.next = RUN
                todo.next = cand[ENTRIES:0] & ~(1 << int(cand_low))
                last.next = cand_low
            elif taking:
                st.next = HOLD
                rec.next = head_word
            elif finishing:
                st.next = IDLE
            elif next_job:
                todo.next = todo & ~(1 << int(todo_low))
                last.next = todo_low

    return lowest, entering, ending, taker, choose, drive, report, state


def top_ports(P: TopParams) -> dict:
    from accelerator.rtl.sequencer import sequencer_ports

    r, c, ab = P.cores + 2, P.cores, P.layout.addr_bits
    epw = P.replay_port_bits // P.replay_word_bits * WORD_BITS  # a replay beat's elements as 16-bit words
    ports = {k: v for k, v in sequencer_ports(P.cores, P.idepth).items() if k in _SEQ_HOST}
    ports.update(
        {
            "keys": unsigned_sig(P.row_bits),
            "k_beats": unsigned_sig(32),
            "v_beats": unsigned_sig(32),
            "kv_bytes": unsigned_sig(BYTES_BITS),
            "taus": unsigned_sig(ENTRIES * P.tas.acc_bits),
            "shifts": unsigned_sig(4 * SHIFT_BITS),
            "s_act": unsigned_sig(SHIFT_BITS),
            "s_score": unsigned_sig(SHIFT_BITS),
            "s_att": unsigned_sig(SHIFT_BITS),
            "req_word": unsigned_sig(r * WORD),
            "w_slot": unsigned_sig(c * bits_for(P.weight_buffers)),
            "w_addr": unsigned_sig(c * 32),
            "w_data": unsigned_sig(c * P.lanes * P.w_bits),
            "x_raddr": unsigned_sig(c * ab),
            "x_rdata": unsigned_sig(c * WORD_BITS),
            "cr_addr": unsigned_sig(c * ab),
            "cr_data": unsigned_sig(c * P.port * WORD_BITS),
            "wr_en": unsigned_sig(c * 2),
            "wr_addr": unsigned_sig(c * 2 * ab),
            "wr_data": unsigned_sig(c * 2 * P.port * WORD_BITS),
            "wr_mask": unsigned_sig(c * P.port),
            "dp_err": unsigned_sig(c),
            "rc_addr": unsigned_sig(32),
            "rc_we": Signal(bool(0)),
            "rc_wdata": unsigned_sig(P.replay_port_bits),
            "rc_rdata": unsigned_sig(P.replay_port_bits),
            "rr_addr": unsigned_sig(ab),
            "rr_data": unsigned_sig(epw),
            "rw_en": unsigned_sig(2),
            "rw_addr": unsigned_sig(2 * ab),
            "rw_data": unsigned_sig(2 * epw),
            "rd_addr": unsigned_sig(ab),
            "rd_data": unsigned_sig(epw),
            "tq_addr": unsigned_sig(ab),
            "tq_data": unsigned_sig(P.tas_lanes * WORD_BITS),
            "tk_addr": unsigned_sig(32),
            "tk_data": unsigned_sig(P.tas_lanes * WORD_BITS),
            "tas_valid": Signal(bool(0)),
            "tas_entry": unsigned_sig(5),
            "tas_score": unsigned_sig(P.tas.acc_bits),
            "req_valid": unsigned_sig(r),
            "req_bytes": unsigned_sig(r * BYTES_BITS),
            "req_group": unsigned_sig(r * 2),
            "mem_done": unsigned_sig(r),
            "fin": unsigned_sig(r),
        }
    )
    return ports


#: Sequencer ports the host drives or reads at the top level.
_SEQ_HOST = (
    "rst",
    "iw_we",
    "iw_addr",
    "iw_data",
    "n_instr",
    "batch",
    "index0",
    "qkv_target",
    "tas_target",
    "o_target",
    "down_target",
    "go",
    "layer_done",
)


@block
def machine_top(
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
    keys,
    k_beats,
    v_beats,
    kv_bytes,
    taus,
    shifts,
    s_act,
    s_score,
    s_att,
    req_word,
    w_slot,
    w_addr,
    w_data,
    x_raddr,
    x_rdata,
    cr_addr,
    cr_data,
    wr_en,
    wr_addr,
    wr_data,
    wr_mask,
    dp_err,
    rc_addr,
    rc_we,
    rc_wdata,
    rc_rdata,
    rr_addr,
    rr_data,
    rw_en,
    rw_addr,
    rw_data,
    rd_addr,
    rd_data,
    tq_addr,
    tq_data,
    tk_addr,
    tk_data,
    tas_valid,
    tas_entry,
    tas_score,
    req_valid,
    req_bytes,
    req_group,
    mem_done,
    fin,
    P: TopParams,
):
    C, R = P.cores, P.cores + 2
    TAS_R, RC_R = C, C + 1
    insts = []
    take, fin_i, put = unsigned_sig(R), unsigned_sig(R), unsigned_sig(R)
    put_mask, head_valid = unsigned_sig(R * ENTRIES), unsigned_sig(R)
    head_word = unsigned_sig(R * WORD)
    qkv_fired, attn_fired, out_fired = unsigned_sig(C), unsigned_sig(ENTRIES), unsigned_sig(ENTRIES)
    cur_word = unsigned_sig(WORD)
    tas_bits = unsigned_sig(ENTRIES)
    insts.append(
        sequencer(
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
            fin_i,
            tas_bits,
            put,
            put_mask,
            head_valid,
            head_word,
            qkv_fired,
            attn_fired,
            out_fired,
            cur_word,
            CORES=C,
            IDEPTH=P.idepth,
            QDEPTH=P.queue_depth,
        )
    )
    clear = Signal(bool(0))
    takes = [Signal(bool(0)) for _ in range(R)]
    fins = [Signal(bool(0)) for _ in range(R)]
    rvalid = [Signal(bool(0)) for _ in range(R)]
    rbytes = [unsigned_sig(BYTES_BITS) for _ in range(R)]
    rgroup = [unsigned_sig(2) for _ in range(R)]
    CB = bits_for(P.max_cols)
    AB = P.layout.addr_bits
    SLB = bits_for(P.weight_buffers)
    PW = P.port * WORD_BITS
    rword = [unsigned_sig(WORD) for _ in range(R)]
    per_core = {k: [] for k in ("w_slot", "w_addr", "x_raddr", "cr_addr", "wr_en", "wr_addr", "wr_data")}
    per_core.update(wr_mask=[], dp_err=[])
    for c in range(C):
        t_start, t_busy, t_done = Signal(bool(0)), Signal(bool(0)), Signal(bool(0))
        t_rows, t_cols = unsigned_sig(P.row_bits), unsigned_sig(CB)
        y_valid, y_row = Signal(bool(0)), unsigned_sig(P.row_bits + bits_for(P.lanes) + 1)
        y_bus = unsigned_sig(P.lanes * P.acc_bits)
        c_w_addr, c_x_col = unsigned_sig(32), unsigned_sig(CB)
        t_w_addr, c_w_base = unsigned_sig(32), unsigned_sig(32)
        c_slot, c_x_base, c_x_addr = unsigned_sig(SLB), unsigned_sig(AB), unsigned_sig(AB)
        j_gemv, j_matrix, j_entry = Signal(bool(0)), unsigned_sig(2), unsigned_sig(5)
        j_att, scoring, v_start = Signal(bool(0)), Signal(bool(0)), Signal(bool(0))
        p_x, t_x = unsigned_sig(EXP_BITS), unsigned_sig(WORD_BITS)
        recip, recip_valid = unsigned_sig(QUOTIENT_BITS), Signal(bool(0))
        j_row0, j_rows = unsigned_sig(P.row0_bits), unsigned_sig(P.row_bits)
        c_cr_addr = unsigned_sig(AB)
        c_wr_en, c_wr_addr, c_wr_data = unsigned_sig(2), unsigned_sig(2 * AB), unsigned_sig(2 * PW)
        c_wr_mask, c_err, c_idle = unsigned_sig(P.port), Signal(bool(0)), Signal(bool(0))
        insts.append(
            gemv_tile(
                clk,
                rst,
                t_start,
                t_rows,
                t_cols,
                t_busy,
                t_done,
                t_w_addr,
                w_data((c + 1) * P.lanes * P.w_bits, c * P.lanes * P.w_bits),
                Signal(bool(0)),
                unsigned_sig(bits_for(P.max_cols - 1)),
                unsigned_sig(16),
                y_valid,
                y_row,
                y_bus,
                LANES=P.lanes,
                W_BITS=P.w_bits,
                X_BITS=WORD_BITS,
                ACC_BITS=P.acc_bits,
                MAX_COLS=P.max_cols,
                ROW_BITS=P.row_bits,
                WADDR_BITS=32,
                EXTRA=P.pipeline_cycles - 3,
                x_raddr=c_x_col,
                x_rdata=t_x,
            )
        )
        insts.append(address_add(c_x_base, c_x_col, c_x_addr))
        insts.append(address_add(c_w_base, t_w_addr, c_w_addr))
        insts.append(tile_input(j_att, p_x, x_rdata((c + 1) * WORD_BITS, c * WORD_BITS), t_x))
        insts.append(
            softmax_unit(
                clk,
                rst,
                y_valid,
                y_row,
                y_bus,
                scoring,
                v_start,
                keys,
                s_score,
                c_x_col,
                p_x,
                recip,
                recip_valid,
                LANES=P.lanes,
                ACC_BITS=P.acc_bits,
                SB=P.score_bits,
                MAX_KEYS=P.max_keys,
            )
        )
        insts.append(
            output_writer(
                clk,
                rst,
                clear,
                y_valid,
                y_row,
                y_bus,
                j_gemv,
                j_matrix,
                j_row0,
                j_rows,
                j_entry,
                j_att,
                shifts,
                s_act,
                s_att,
                recip,
                recip_valid,
                c_cr_addr,
                cr_data((c + 1) * PW, c * PW),
                c_wr_en,
                c_wr_addr,
                c_wr_data,
                c_wr_mask,
                c_err,
                c_idle,
                L=P.layout,
                LANES=P.lanes,
                ACC_BITS=P.acc_bits,
                PORT=P.port,
                A=P.act_bits,
            )
        )
        for k, sig in (
            ("w_slot", c_slot),
            ("w_addr", c_w_addr),
            ("x_raddr", c_x_addr),
            ("cr_addr", c_cr_addr),
            ("wr_en", c_wr_en),
            ("wr_addr", c_wr_addr),
            ("wr_data", c_wr_data),
            ("wr_mask", c_wr_mask),
            ("dp_err", c_err),
        ):
            per_core[k].append(sig)
        insts.append(
            core_engine(
                clk,
                rst,
                clear,
                put(c),
                cur_word,
                head_valid(c),
                head_word((c + 1) * WORD, c * WORD),
                takes[c],
                fins[c],
                attn_fired,
                rvalid[c],
                rbytes[c],
                rgroup[c],
                mem_done(c),
                t_start,
                t_rows,
                t_cols,
                t_busy,
                keys,
                k_beats,
                v_beats,
                kv_bytes,
                rword[c],
                c_slot,
                c_w_base,
                j_gemv,
                j_att,
                scoring,
                v_start,
                j_matrix,
                j_row0,
                j_rows,
                j_entry,
                c_x_base,
                c_idle,
                P=P,
            )
        )
    attn_all, bmask = Signal(bool(0)), unsigned_sig(ENTRIES)

    @always_comb
    def batch_mask():
        bmask.next = (1 << batch) - 1

    @always_comb
    def all_attention():
        attn_all.next = (attn_fired & bmask) == bmask

    insts += [batch_mask, all_attention]
    # the TAS unit and its engine
    tp = P.tas
    u_start, u_busy, u_done, u_replay, u_write = (Signal(bool(0)) for _ in range(5))
    u_entry = unsigned_sig(5)
    tau, score = signed_sig(tp.acc_bits), signed_sig(tp.acc_bits)
    taus_sh = unsigned_sig(len(taus))
    t_pre, t_next, scored = Signal(bool(0)), unsigned_sig(5), unsigned_sig(5)
    insts.append(
        tas_unit(
            clk,
            rst,
            u_start,
            tq_data,
            tk_data,
            tau,
            Signal(bool(0)),
            u_busy,
            u_done,
            u_replay,
            score,
            **tp.kwargs(),
        )
    )
    insts.append(
        tas_reader(
            clk,
            rst,
            t_pre,
            u_entry,
            u_start,
            u_entry,
            t_next,
            tq_addr,
            tk_addr,
            L=P.layout,
            HEADS=P.heads,
            HEAD_DIM=P.head_dim,
            KV_HEADS=P.kv_heads,
            LANES=P.tas_lanes,
        )
    )
    insts.append(
        unit_engine(
            clk,
            rst,
            clear,
            put(TAS_R),
            cur_word,
            head_valid(TAS_R),
            head_word((TAS_R + 1) * WORD, TAS_R * WORD),
            takes[TAS_R],
            fins[TAS_R],
            tas_bits,
            qkv_fired,
            attn_all,
            out_fired,
            rvalid[TAS_R],
            rbytes[TAS_R],
            mem_done(TAS_R),
            u_start,
            u_entry,
            u_write,
            u_busy,
            u_done,
            u_replay,
            Signal(bool(1)),
            t_pre,
            t_next,
            ENTRY_BYTES=P.tas_bytes,
            CORES=C,
            IS_TAS=True,
        )
    )

    AW = tp.acc_bits
    tau_low = taus_sh(AW, 0)

    @always_comb
    def threshold():
        """Each entry's threshold (the host sets it from the reference score so that the comparison
        reproduces the trace's decision)."""
        taus_sh.next = taus >> (u_entry * AW)

    @always_comb
    def threshold_value():
        tau.next = tau_low.signed()

    @always_seq(clk.posedge, reset=rst)
    def scored_entry():
        if u_start:
            scored.next = u_entry

    @always_comb
    def score_out():
        tas_valid.next = u_done
        tas_entry.next = scored
        tas_score.next = score[AW:]

    # the replay-cache controller, its engine, and its data in and out of the activation memory
    r_start, r_busy, r_done, r_write, r_rvalid = (Signal(bool(0)) for _ in range(5))
    r_entry, r_next = unsigned_sig(5), unsigned_sig(5)
    r_idle, r_pre = Signal(bool(0)), Signal(bool(0))
    r_wdata, r_rdata = unsigned_sig(P.replay_port_bits), unsigned_sig(P.replay_port_bits)
    epb = P.replay_port_bits // P.replay_word_bits
    insts.append(
        replay_cache_ctrl(
            clk,
            rst,
            r_start,
            r_write,
            unsigned_sig(1),
            r_entry,
            r_wdata,
            r_busy,
            r_done,
            r_rvalid,
            r_rdata,
            rc_addr,
            rc_we,
            rc_wdata,
            rc_rdata,
            LAYERS=1,
            TPF=ENTRIES,
            WORDS=P.replay_words,
            WORD_BITS=P.replay_word_bits,
            PORT_BITS=P.replay_port_bits,
            ADDR_BITS=32,
            BASE=0,
        )
    )
    insts.append(
        unit_engine(
            clk,
            rst,
            clear,
            Signal(bool(0)),
            unsigned_sig(WORD),
            head_valid(RC_R),
            head_word((RC_R + 1) * WORD, RC_R * WORD),
            takes[RC_R],
            fins[RC_R],
            unsigned_sig(ENTRIES),
            qkv_fired,
            attn_all,
            out_fired,
            rvalid[RC_R],
            rbytes[RC_R],
            mem_done(RC_R),
            r_start,
            r_entry,
            r_write,
            r_busy,
            r_done,
            Signal(bool(0)),
            r_idle,
            r_pre,
            r_next,
            ENTRY_BYTES=P.replay_bytes,
            CORES=C,
            IS_TAS=False,
        )
    )
    insts.append(
        replay_writer(
            clk,
            rst,
            r_rvalid,
            r_rdata,
            r_start,
            r_entry,
            rr_addr,
            rr_data,
            rw_en,
            rw_addr,
            rw_data,
            r_idle,
            L=P.layout,
            EPB=epb,
            CACHE_BITS=P.replay_word_bits,
            A=P.act_bits,
        )
    )
    insts.append(
        replay_reader(
            clk,
            rst,
            r_pre,
            r_entry,
            r_start,
            r_entry,
            r_next,
            rd_addr,
            rd_data,
            r_wdata,
            L=P.layout,
            EPB=epb,
            CACHE_BITS=P.replay_word_bits,
        )
    )
    rword[TAS_R] = Signal(intbv(0)[WORD:])  # the TAS and replay operands are not fetched as data yet
    rword[RC_R] = Signal(intbv(0)[WORD:])
    rgroup[TAS_R] = Signal(intbv(P.group_kv)[2:])
    rgroup[RC_R] = Signal(intbv(P.group_replay)[2:])
    insts += [
        wire(ConcatSignal(*reversed(takes)), take),
        wire(ConcatSignal(*reversed(fins)), fin_i),
        wire(ConcatSignal(*reversed(rvalid)), req_valid),
        wire(ConcatSignal(*reversed(rbytes)), req_bytes),
        wire(ConcatSignal(*reversed(rgroup)), req_group),
        wire(ConcatSignal(*reversed(rword)), req_word),
        wire(fin_i, fin),
    ]
    for k, out in (
        ("w_slot", w_slot),
        ("w_addr", w_addr),
        ("x_raddr", x_raddr),
        ("cr_addr", cr_addr),
        ("wr_en", wr_en),
        ("wr_addr", wr_addr),
        ("wr_data", wr_data),
        ("wr_mask", wr_mask),
        ("dp_err", dp_err),
    ):
        sigs = per_core[k]
        insts.append(wire(ConcatSignal(*reversed(sigs)) if len(sigs) > 1 else sigs[0], out))

    @always_comb
    def begin():
        clear.next = go

    return insts, threshold, threshold_value, scored_entry, score_out, begin
