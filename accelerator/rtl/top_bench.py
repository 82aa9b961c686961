"""Run one decoder layer of one decode step on the RTL top level, and the same layer-step on the event model.

The top level (``accelerator.rtl.top.machine_top``) is elaborated for the workload's machine and layer,
loaded with the layer's compiled stream and registers, and run against a memory model: one channel per
memory group that serves requests first come first served (requests of one cycle in requester order:
cores, TAS unit, replay-cache controller), rounds each to whole bursts, moves ``sustained_Bps / clock``
bytes per cycle and completes a transfer ``latency_ns`` after its last byte, which is the event model's
``arbitration: fifo`` channel (``accelerator.channel``). Where the rates and the latency are whole numbers
of cycles both are exact to the cycle; otherwise the model rounds each completion up to the next cycle.
"""

from __future__ import annotations

import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from myhdl import Signal, Simulation, StopSimulation, block, instance

from accelerator.compiler import program
from accelerator.cost import ceil_div, gemv_cycles
from accelerator.isa import MATRICES, encode
from accelerator.machine import layer_trace
from accelerator.rtl.common import bits_for, clock_source, unpack
from accelerator.rtl.datapath import SHIFT_BITS, WORD_BITS, ActLayout
from accelerator.rtl.layer_numerics import ATT_RECIP_BITS, Numerics, layer_data, reference
from accelerator.rtl.pe_lane import accumulator_bits
from accelerator.rtl.sequencer import ENTRIES, host_writes, layer_registers
from accelerator.rtl.top import BYTES_BITS, TopParams, machine_top, top_ports

#: Program RAM depth: a layer's stream is 43 words at most on the paper's machine (frame 0, batch 10, two
#: cores); one build serves every step and layer of a workload.
PROGRAM_WORDS = 64


class TopError(ValueError):
    """A layer the top level cannot run as the event model does (say why)."""


def _whole_bytes(x: float, what: str) -> int:
    if float(x) != int(x):
        raise TopError(f"{what} is {x} bytes, not a whole number: the memory ports move whole bytes")
    return int(x)


def top_params(job, step: int) -> TopParams:
    cost, hw, d = job.cost, job.cost.hw, job.cost.dims
    port = hw.input_write_elems_per_cycle
    for m in ("qkv", "up", "down"):
        rows, cols = cost.blocks[m][0], cost.matrices[m][1]
        if cost.block_cycles[m][0] != gemv_cycles(rows, cols, hw.lanes_per_core, hw.pe_pipeline_cycles):
            raise TopError(
                f"the cost model charges an exposed input-buffer write before the first {m} block; the top "
                "level takes a GEMV's input as written by the previous phase (choose a wider "
                "hardware.input_write_elems_per_cycle or larger layers)"
            )
    if d.mlp_kind != "swiglu":
        raise TopError(f"model.mlp_kind: the top level's data path computes a SwiGLU MLP, not {d.mlp_kind}")
    if not 8 <= hw.precision.activations_bits <= 16:
        raise TopError("hardware.precision.activations_bits: the data path holds 8- to 16-bit activations")
    if hw.precision.replay_cache_bits != hw.precision.activations_bits:
        raise TopError(
            "hardware.precision.replay_cache_bits: the data path caches MLP outputs at the activation precision"
        )
    if hw.replay_port_bits % hw.precision.replay_cache_bits or (d.hidden * hw.precision.replay_cache_bits) % (
        hw.replay_port_bits
    ):
        raise TopError("hardware.replay_port_bits: the data path moves whole beats of whole cached elements")
    if d.head_dim > hw.lanes_per_core:
        raise TopError(
            f"hardware.lanes_per_core: a head's values run in one tile pass on the top level; {d.head_dim} "
            f"head dims need at least as many lanes"
        )
    if d.head_dim % hw.tas_lanes:
        raise TopError(
            f"hardware.tas_lanes: the top level's TAS unit reads whole beats of a head; {d.head_dim} head "
            f"dims are not a multiple of {hw.tas_lanes} lanes"
        )
    if hw.lanes_per_core % port:
        raise TopError(
            f"hardware.input_write_elems_per_cycle: the output writer drains whole groups of {port} of a "
            f"tile's {hw.lanes_per_core} lanes; choose a divisor of lanes_per_core"
        )
    nb = max(len(b) for b in cost.blocks.values())
    rows = [cost.blocks[m][b] if b < len(cost.blocks[m]) else 0 for m in MATRICES for b in range(nb)]
    nbytes = [
        _whole_bytes(r * cost.matrices[m][1] * cost.w_bytes, f"a {m} weight block")
        for m in MATRICES
        for r in (cost.blocks[m][b] if b < len(cost.blocks[m]) else 0 for b in range(nb))
    ]
    keys = int(cost.attended(job.context()[-1]))
    words = len(program(cost, _options(job, step))[0])
    groups = sorted(hw.memory)
    pl = hw.placement
    row0 = [sum(cost.blocks[m][:b]) if b < len(cost.blocks[m]) else 0 for m in MATRICES for b in range(nb)]
    w_bits = max(hw.precision.weights_bits, hw.precision.kv_bits)
    max_cols = max(max(c for _, c in cost.matrices.values()), keys, d.head_dim)
    return TopParams(
        cores=hw.cores,
        lanes=hw.lanes_per_core,
        pipeline_cycles=hw.pe_pipeline_cycles,
        queue_depth=hw.queue_depth,
        weight_buffers=hw.weight_buffers,
        idepth=max(PROGRAM_WORDS, 1 << bits_for(words - 1)),
        max_cols=max_cols,
        row_bits=bits_for(max(max(rows), keys, d.head_dim)) + 1,
        block_rows=tuple(rows),
        block_bytes=tuple(nbytes),
        matrix_cols=tuple(cost.matrices[m][1] for m in MATRICES),
        max_blocks=nb,
        heads=d.heads,
        kv_heads=d.kv_heads,
        head_dim=d.head_dim,
        max_keys=keys,
        score_bits=accumulator_bits(w_bits, WORD_BITS, d.head_dim),
        tas_lanes=hw.tas_lanes,
        tas_bytes=_whole_bytes(d.kv_dim * cost.kv_bytes, "an aligned key"),
        replay_words=d.hidden,
        replay_word_bits=hw.precision.replay_cache_bits,
        replay_port_bits=hw.replay_port_bits,
        replay_bytes=_whole_bytes(cost.replay_bytes, "a cached output"),
        group_weights=groups.index(pl.weights),
        group_kv=groups.index(pl.kv_cache),
        group_replay=groups.index(pl.replay_cache),
        block_row0=tuple(row0),
        layout=ActLayout(d.hidden, d.q_dim, d.kv_dim, d.mlp_hidden, ENTRIES),
        port=port,
        act_bits=hw.precision.activations_bits,
        w_bits=w_bits,
        acc_bits=accumulator_bits(w_bits, WORD_BITS, max_cols),
    )


def _options(job, step):
    from accelerator.machine import Machine

    return Machine(job).options(step)


@block
def memory_model(clk, req_valid, req_bytes, req_group, mem_done, channels, requesters: int):
    """``channels``: per memory group (bytes per cycle as a Fraction, latency cycles, burst bytes)."""
    free = [Fraction(0)] * len(channels)
    due: dict[int, list[int]] = {}

    @instance
    def serve():
        edge = 0
        while True:
            yield clk.posedge
            edge += 1
            t = edge - 1  # requests valid before this edge were made at time t
            valid = int(req_valid)
            if valid:
                sizes = unpack(int(req_bytes), BYTES_BITS, requesters, signed=False)
                group = unpack(int(req_group), 2, requesters, signed=False)
                for r in range(requesters):
                    if valid >> r & 1:
                        rate, latency, burst = channels[group[r]]
                        nbytes = -(-sizes[r] // burst) * burst
                        start = max(Fraction(t), free[group[r]])
                        free[group[r]] = start + nbytes / rate
                        done = int(-(-(free[group[r]] + latency) // 1))
                        due.setdefault(done, []).append(r)
            pulse = 0
            for r in due.pop(edge, ()):
                if pulse >> r & 1:
                    raise AssertionError(f"requester {r}: two transfers complete in one cycle")
                pulse |= 1 << r
            mem_done.next = pulse

    return serve


def layer_inputs(job, step: int, layer: int, trace: dict) -> dict:
    cost, hw, d = job.cost, job.cost.hw, job.cost.dims
    keys = int(cost.attended(job.context()[step]))
    lanes = hw.lanes_per_core
    return {
        "words": [encode(i) for i in program(cost, trace["options"])[0]],
        "keys": keys,
        "k_beats": int(ceil_div(keys, lanes)) * d.head_dim,  # a key/value head's keys in the operand
        "v_beats": int(ceil_div(d.head_dim, lanes)) * keys,  # and its values
        "kv_bytes": _whole_bytes(cost.kv_bytes_per_entry(keys), "an entry's keys and values"),
        "compute": [bool(job.compute[e, layer, step]) for e in range(job.batch)],
    }


def memory_channels(hw) -> list[tuple[Fraction, Fraction, int]]:
    out = []
    for name in sorted(hw.memory):
        g = hw.memory[name]
        rate = Fraction(g.sustained_Bps).limit_denominator(1 << 20) / Fraction(hw.clock_Hz).limit_denominator(
            1
        )
        latency = (
            Fraction(g.latency_ns).limit_denominator(1 << 10)
            * Fraction(hw.clock_MHz).limit_denominator(1 << 10)
            / 1000
        )
        out.append((rate, latency, g.burst_bytes))
    return out


def registers(job, trace: dict, ins: dict, P: TopParams, scores) -> dict:
    """The values the host writes into the top level's registers before ``go``. ``scores``: each entry's
    TAS score as the unit will compute it; its threshold is set so that the comparison reproduces the
    trace's decision (replay: tau = score, ``score >= tau``; compute: tau = score + 1)."""
    aw = P.tas.acc_bits
    taus = 0
    for e, computes in enumerate(ins["compute"]):
        tau = int(scores[e]) + (1 if computes else 0)
        taus |= (tau & ((1 << aw) - 1)) << (aw * e)
    return {
        **layer_registers(trace, job.batch),
        **{k: ins[k] for k in ("keys", "k_beats", "v_beats", "kv_bytes")},
        "taus": taus,
    }


def run_layer(job, step: int, layer: int, simulator: str = "myhdl", progress=None, seed: int = 0) -> dict:
    """The layer-step on the RTL top level and on the event model: layer cycles and every record's
    finish (cycle, engine) of both. ``simulator``: ``myhdl`` (the MyHDL model itself, control and timing
    only) or ``verilator`` (the converted Verilog, with the data path: ``outputs`` compares every tensor it
    writes with ``layer_numerics.reference``)."""
    trace = layer_trace(job, step, layer)
    P = top_params(job, step)
    ins = layer_inputs(job, step, layer, trace)
    limit = trace["cycles"] * 2 + 1000
    channels = memory_channels(job.cost.hw)
    t0 = time.perf_counter()
    outputs = None
    if simulator == "verilator":
        from accelerator.rtl import top_verilator

        binary = top_verilator.build(P, progress)
        built = time.perf_counter()
        tmp = tempfile.TemporaryDirectory(prefix="cosim-layer-")
        work = Path(tmp.name)
        num = Numerics.for_job(job)
        data = layer_data(job, layer, step, ins["keys"], seed)
        ref = reference(job, data, num, job.compute[:, layer, step])
        index = write_data(work, P, data, job.batch)
        regs = {**registers(job, trace, ins, P, ref["tas"]), **data_registers(num)}
        ports = top_ports(P)
        stimulus = [f"{len(ins['words']):x}"] + [f"{w:x}" for w in ins["words"]]
        stimulus += top_verilator.register_tokens(ports, regs)
        stimulus.append(f"{len(channels):x}")
        for rate, latency, burst in channels:
            stimulus += [
                f"{x:x}"
                for x in (rate.numerator, rate.denominator, latency.numerator, latency.denominator, burst)
            ]
        stimulus += [f"{x:x}" for pair in index for x in pair]
        cycles, fins, overrun, scores = top_verilator.simulate(binary, stimulus, limit, work, P.tas.acc_bits)
        timing = {"build_s": built - t0, "run_s": time.perf_counter() - built}
        outputs = compare_outputs(work, P, ref, job.compute[:, layer, step], job.batch)
        outputs["overrun"] = overrun
        if trace["options"].tas:  # every entry scored: the unit's score against the reference's
            got = np.array([scores.get(e, np.nan) for e in range(job.batch)])
            outputs["tensors"]["tas"] = (job.batch, int(np.count_nonzero(got != ref["tas"])))
        tmp.cleanup()
    else:  # no data: every score is 0
        regs = registers(job, trace, ins, P, np.zeros(job.batch, dtype=np.int64))
        cycles, fins = _run_myhdl(job, P, ins, regs, channels, limit)
        timing = {"build_s": 0.0, "run_s": time.perf_counter() - t0}
    return {
        "cycles": trace["cycles"],
        "rtl_cycles": cycles,
        "expected_ends": sorted((r["end"], r["engine"]) for r in trace["records"]),
        "rtl_ends": fins,
        "words": len(ins["words"]),
        "outputs": outputs,
        **timing,
    }


def data_registers(num: Numerics) -> dict:
    shifts = sum(num.shifts[m] << (SHIFT_BITS * i) for i, m in enumerate(MATRICES))
    return {
        "shifts": shifts,
        "s_act": num.s_act,
        "s_score": num.s_score,
        "s_att": ATT_RECIP_BITS - num.s_value,
    }


def weight_beats(w: np.ndarray, row0: int, rows: int, P: TopParams) -> np.ndarray:
    """One weight block as the tile reads it: tile-major beats of ``lanes`` weights (lane r of beat
    t * cols + c is W[row0 + t * lanes + r, c]), ``w_bits`` per lane, packed little-endian into 32-bit
    words (``top_verilator.beat_words`` per beat)."""
    L, bits = P.lanes, P.w_bits
    tiles = -(-rows // L)
    cols = w.shape[1]
    block = np.zeros((tiles * L, cols), dtype=np.int64)
    block[:rows] = w[row0 : row0 + rows]
    lanes = block.reshape(tiles, L, cols).transpose(0, 2, 1).reshape(-1, L) & ((1 << bits) - 1)
    bits_per_beat = L * bits
    words = -(-bits_per_beat // 32)
    if bits in (4, 8, 16) and bits_per_beat % 32 == 0:
        if bits == 4:
            packed = (lanes[:, 0::2] | (lanes[:, 1::2] << 4)).astype(np.uint8)
        else:
            packed = lanes.astype(np.uint8 if bits == 8 else np.uint16)
        return np.ascontiguousarray(packed).view(np.uint32).reshape(-1, words)
    out = np.zeros((lanes.shape[0], words), dtype=np.uint32)
    for r in range(L):
        bit = r * bits
        out[:, bit // 32] |= (lanes[:, r] << (bit % 32)).astype(np.uint64).astype(np.uint32)
        if bit % 32 + bits > 32:
            out[:, bit // 32 + 1] |= (lanes[:, r] >> (32 - bit % 32)).astype(np.uint32)
    return out


def kv_operand(keys: np.ndarray, values: np.ndarray, P: TopParams) -> np.ndarray:
    """One entry's ATTN operand as the tile reads it: per key/value head, its keys (the scores job's
    ``keys x head_dim`` matrix) then its values transposed (the values job's ``head_dim x keys``)."""
    hd = P.head_dim
    parts = []
    for g in range(P.kv_heads):
        k, v = keys[:, g * hd : (g + 1) * hd], values[:, g * hd : (g + 1) * hd]
        parts.append(weight_beats(k, 0, k.shape[0], P))
        parts.append(weight_beats(np.ascontiguousarray(v.T), 0, hd, P))
    return np.concatenate(parts)


def write_data(work, P: TopParams, data, batch: int) -> list[tuple[int, int]]:
    """``act_in.bin`` (the activation memory before the layer) and ``weights.bin`` (every weight block's
    beats, then every entry's keys and values) for the Verilator testbench; returns (first word, beats)
    per (matrix, block), then per entry."""
    L = P.layout
    act = np.zeros(L.words, dtype=np.int16)
    for e in range(batch):
        act[L.base(e, "x") : L.base(e, "x") + L.hidden] = data.x[e]
    act.tofile(work / "act_in.bin")
    keys = np.zeros((ENTRIES, L.kv_dim), dtype=np.int16)  # the TAS unit's key buffer: the aligned keys
    keys[:batch] = data.k_prev
    keys.tofile(work / "tas_keys.bin")
    replay = np.zeros((ENTRIES, P.layout.hidden), dtype=np.int64)
    replay[:batch] = data.cache
    pack_cache(replay, P).tofile(work / "replay_in.bin")
    index, at = [], 0
    with open(work / "weights.bin", "wb") as f:
        for m in MATRICES:
            for b in range(P.max_blocks):
                rows = P.block_rows[MATRICES.index(m) * P.max_blocks + b]
                if not rows:
                    index.append((0, 0))
                    continue
                beats = weight_beats(
                    data.weights[m], P.block_row0[MATRICES.index(m) * P.max_blocks + b], rows, P
                )
                beats.tofile(f)
                index.append((at, len(beats)))
                at += beats.size
        for e in range(ENTRIES):
            if e >= batch:
                index.append((0, 0))
                continue
            beats = kv_operand(data.keys[e], data.values[e], P)
            beats.tofile(f)
            index.append((at, len(beats)))
            at += beats.size
    return index


def pack_cache(values: np.ndarray, P: TopParams) -> np.ndarray:
    """Cached outputs (entries, hidden) as the replay port's beats: ``replay_word_bits`` per element,
    little-endian, in 32-bit words (entry-major, as the controller addresses them)."""
    bits = P.replay_word_bits
    raw = values & ((1 << bits) - 1)
    if bits == 16:
        return raw.astype(np.uint16).view(np.uint32).reshape(-1)
    if bits == 8:
        return raw.astype(np.uint8).view(np.uint32).reshape(-1)
    raise TopError("hardware.precision.replay_cache_bits: the data path packs 8- or 16-bit cached elements")


def unpack_cache(words: np.ndarray, P: TopParams) -> np.ndarray:
    bits = P.replay_word_bits
    raw = words.view(np.uint16 if bits == 16 else np.uint8).astype(np.int64)
    return np.where(raw >> (bits - 1), raw - (1 << bits), raw).reshape(ENTRIES, P.layout.hidden)


#: What the RTL writes, per entry: (region, first element, count) of the activation memory, and whether only
#: the entries that compute their MLP write it.
def _tensors(L) -> dict:
    return {
        "qkv": ("qkv", 0, L.q_dim + 2 * L.kv_dim, False),
        "att": ("att", 0, L.q_dim, False),
        "h": ("h", 0, L.hidden, False),
        "g": ("gu", 0, L.mlp, True),
        "a": ("gu", L.mlp, L.mlp, True),
        "d": ("d", 0, L.hidden, False),
        "y": ("y", 0, L.hidden, False),
    }


def compare_outputs(work, P: TopParams, ref: dict, compute, batch: int) -> dict:
    """Every tensor the RTL wrote against the reference: name -> (values compared, values that differ)."""
    L = P.layout
    act = np.fromfile(work / "act_out.bin", dtype=np.int16).astype(np.int64)
    expect = {
        "qkv": ref["qkv"],
        "att": ref["att"],
        "h": ref["h"],
        "g": ref["gu"][:, : L.mlp],
        "a": ref["a"],
        "d": ref["d"],
        "y": ref["y"],
    }
    out = {}
    for name, (region, first, count, computing_only) in _tensors(L).items():
        n = bad = 0
        for e in range(batch):
            if computing_only and not compute[e]:
                continue
            got = act[L.base(e, region) + first : L.base(e, region) + first + count]
            n += count
            bad += int(np.count_nonzero(got != expect[name][e]))
        out[name] = (n, bad)
    # the replay cache after the layer: computing entries' new d stored, the replayed ones' kept
    cache = unpack_cache(np.fromfile(work / "replay_out.bin", dtype=np.uint32), P)[:batch]
    out["cache"] = (cache.size, int(np.count_nonzero(cache != ref["d"])))
    return {"tensors": out}


def _run_myhdl(job, P: TopParams, ins: dict, regs: dict, channels, limit: int):
    clk = Signal(bool(0))
    ports = top_ports(P)
    dut = machine_top(clk, **ports, P=P)
    requesters = P.cores + 2
    mem = memory_model(
        clk,
        ports["req_valid"],
        ports["req_bytes"],
        ports["req_group"],
        ports["mem_done"],
        channels,
        requesters,
    )
    fins: list[tuple[int, int]] = []
    out = {"cycles": None}

    @instance
    def bench():
        p = ports
        for _ in host_writes(p, ins["words"], regs):
            yield clk.posedge
        p["go"].next = 1
        yield clk.posedge
        p["go"].next = 0
        for t in range(limit):
            yield clk.posedge  # values read here are those of time t
            fin = int(p["fin"])
            for r in range(requesters):
                if fin >> r & 1:
                    fins.append((t, r))
            if p["layer_done"]:
                out["cycles"] = t - 1
                raise StopSimulation
        raise StopSimulation

    Simulation(dut, mem, clock_source(clk), bench).run(quiet=True)
    return out["cycles"], sorted(fins)
