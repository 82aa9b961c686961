"""The top level converted to Verilog and run under Verilator, for layers too large for a MyHDL simulation.

``build(P)`` converts ``machine_top`` for the parameters ``P``, writes a C++ testbench for its ports and
compiles both with Verilator into the private RTL build cache (``accelerator.rtl.tools``; one build per
parameter set, tool versions and accelerator sources). The testbench reads the layer's program and
registers and the memory channels from a stimulus file, holds ``go`` for one edge, and then plays the
memory model of ``accelerator.rtl.top_bench`` (first come first served per channel, whole bursts,
bytes per cycle, latency) cycle by cycle until ``layer_done``; it prints every record finish and the
layer's cycles.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from pathlib import Path

from myhdl import Signal

from accelerator.rtl.common import bits_for
from accelerator.rtl.sequencer import ATTN, ENTRIES, GEMV
from accelerator.rtl.tools import build_key, cache_dir, missing, run, sources_digest, tool_version
from accelerator.rtl.top import TopParams, machine_top, top_ports

#: Ports the stimulus file sets, in order (after the program).
REGISTERS = (
    "batch",
    "index0",
    "qkv_target",
    "tas_target",
    "o_target",
    "down_target",
    "keys",
    "k_beats",
    "v_beats",
    "kv_bytes",
    "taus",
    "shifts",
    "s_act",
    "s_score",
    "s_att",
)

_TB = r"""
#include "Vmachine_top.h"
#include "verilated.h"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <vector>

@CONSTANTS@

static uint64_t rd(FILE* f) {
    unsigned long long v = 0;
    if (fscanf(f, "%llx", &v) != 1) { fprintf(stderr, "stimulus: short file\n"); exit(2); }
    return v;
}

// Ports as arrays of 32-bit words (Verilator keeps ports up to 64 bits as scalars, wider ones as VlWide).
template <std::size_t N> static void get_words(const VlWide<N>& s, uint32_t* w) {
    for (std::size_t i = 0; i < N; i++) w[i] = s[i];
}
template <typename T> static void get_words(const T& s, uint32_t* w) {
    uint64_t v = (uint64_t) s; w[0] = (uint32_t) v; w[1] = (uint32_t) (v >> 32);
}
template <std::size_t N> static void set_words(VlWide<N>& s, const uint32_t* w) {
    for (std::size_t i = 0; i < N; i++) s[i] = w[i];
}
template <typename T> static void set_words(T& s, const uint32_t* w) {
    s = (T) (((uint64_t) w[1] << 32) | w[0]);
}
static uint64_t field(const uint32_t* w, int lo, int width) {
    int i = lo >> 5, o = lo & 31;
    unsigned __int128 v = (unsigned __int128) w[i] | ((unsigned __int128) w[i + 1] << 32)
        | ((unsigned __int128) w[i + 2] << 64);
    v >>= o;
    return (uint64_t) v & (width >= 64 ? ~0ULL : ((1ULL << width) - 1));
}
static void put_field(uint32_t* w, int lo, int width, uint64_t v) {
    for (int b = 0; b < width; b++) {
        int k = lo + b;
        if (v >> b & 1) w[k >> 5] |= 1u << (k & 31); else w[k >> 5] &= ~(1u << (k & 31));
    }
}

// Activation-memory ports: reads registered (the memory before this edge's writes), writes at the edge.
static void read_port(const std::vector<int16_t>& act, uint64_t a, int n, uint32_t* out, int lo) {
    for (int j = 0; j < n; j++)
        if (a + j < (uint64_t) ACT_WORDS) put_field(out, lo + 16 * j, 16, (uint16_t) act[a + j]);
}
static bool write_ports(std::vector<int16_t>& act, std::vector<long long>& wrote_at, long long t,
                        const uint32_t* en, const uint32_t* addr, const uint32_t* data, const uint32_t* mask,
                        int ports, int width, int ports_per_mask) {
    for (int p = 0; p < ports; p++) {
        if (!field(en, p, 1)) continue;
        uint64_t a = field(addr, AB * p, AB);
        for (int j = 0; j < width; j++) {
            if (mask && !field(mask, width * (p / ports_per_mask) + j, 1)) continue;
            if (a + j >= (uint64_t) ACT_WORDS) { printf("write out of range %lld\n", t); return false; }
            if (wrote_at[a + j] == t) { printf("write conflict %lld %llu\n", t, (unsigned long long) (a + j)); return false; }
            wrote_at[a + j] = t;
            act[a + j] = (int16_t) field(data, 16 * (p * width + j), 16);
        }
    }
    return true;
}

// The layer's data: the activation memory image and the weight blocks as tile beats.
struct Data {
    std::vector<int16_t> act;
    std::vector<uint32_t> replay;  // the replay cache: per entry, its beats of RC_WORDS words
    std::vector<int16_t> tas_keys;  // the TAS unit's key buffer: per entry, its aligned key
    std::vector<uint32_t> beats;
    std::vector<uint64_t> block_at, block_beats;  // per (matrix, block): first word, beats
    std::vector<uint64_t> kv_at, kv_beats;  // per entry: its ATTN operand (keys and values)
};

static void load_data(const char* dir, Data& d) {
    char path[4096];
    snprintf(path, sizeof path, "%s/act_in.bin", dir);
    FILE* f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    d.act.resize(ACT_WORDS);
    if (fread(d.act.data(), 2, ACT_WORDS, f) != (size_t) ACT_WORDS) { fprintf(stderr, "act_in: short\n"); exit(2); }
    fclose(f);
    snprintf(path, sizeof path, "%s/replay_in.bin", dir);
    f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    d.replay.resize(RC_ENTRIES * RC_BEATS * RC_WORDS);
    if (fread(d.replay.data(), 4, d.replay.size(), f) != d.replay.size()) { fprintf(stderr, "replay_in: short\n"); exit(2); }
    fclose(f);
    snprintf(path, sizeof path, "%s/tas_keys.bin", dir);
    f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    d.tas_keys.resize(RC_ENTRIES * KV_DIM);
    if (fread(d.tas_keys.data(), 2, d.tas_keys.size(), f) != d.tas_keys.size()) { fprintf(stderr, "tas_keys: short\n"); exit(2); }
    fclose(f);
    snprintf(path, sizeof path, "%s/weights.bin", dir);
    f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    d.beats.resize(n / 4 + 3);
    if (fread(d.beats.data(), 4, n / 4, f) != (size_t) (n / 4)) { fprintf(stderr, "weights: short\n"); exit(2); }
    fclose(f);
}

int main(int argc, char** argv) {
    if (argc < 4) { fprintf(stderr, "usage: tb STIMULUS LIMIT DATA_DIR\n"); return 2; }
    FILE* f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    long long limit = atoll(argv[2]);
    Data data;
    load_data(argv[3], data);
    Verilated::commandArgs(1, argv);
    Vmachine_top* top = new Vmachine_top;
    auto edge = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); };
    top->rst = 1; edge(); edge(); top->rst = 0;
    int n = (int) rd(f);
    for (int a = 0; a < n; a++) { top->iw_we = 1; top->iw_addr = a; top->iw_data = rd(f); edge(); }
    top->iw_we = 0;
    top->n_instr = n;
@REGISTERS@
    int groups = (int) rd(f);
    std::vector<long double> rate(groups), lat(groups), freeat(groups, 0.0L);
    std::vector<uint64_t> burst(groups);
    for (int g = 0; g < groups; g++) {
        long double rn = rd(f), rdn = rd(f), ln = rd(f), ld = rd(f);
        rate[g] = rn / rdn; lat[g] = ln / ld; burst[g] = rd(f);
    }
    data.block_at.resize(4 * NB); data.block_beats.resize(4 * NB);
    for (int i = 0; i < 4 * NB; i++) { data.block_at[i] = rd(f); data.block_beats[i] = rd(f); }
    data.kv_at.resize(RC_ENTRIES); data.kv_beats.resize(RC_ENTRIES);
    for (int i = 0; i < RC_ENTRIES; i++) { data.kv_at[i] = rd(f); data.kv_beats[i] = rd(f); }
    const int R = @REQUESTERS@;
    std::map<long long, uint64_t> due;
    // operand buffers: the record fetched into each, and whether its fetch completed
    std::vector<std::vector<uint64_t>> slot_word(C, std::vector<uint64_t>(WB, 0));
    std::vector<long long> issued(C, 0);
    static uint32_t w_req[R_WORDS + 3], w_slot[SLOT_WORDS + 3], w_addr[WADDR_WORDS + 3], w_data[WDATA_WORDS + 3];
    static uint32_t x_addr[XADDR_WORDS + 3], x_data[XDATA_WORDS + 3], c_addr[XADDR_WORDS + 3];
    static uint32_t c_data[CDATA_WORDS + 3], wr_en[WREN_WORDS + 3], wr_addr[WRADDR_WORDS + 3];
    static uint32_t wr_data[WRDATA_WORDS + 3], wr_mask[WRMASK_WORDS + 3], req_bytes[RB_WORDS + 3];
    static uint32_t rc_wdata[RC_WORDS + 3], rc_rdata[RC_WORDS + 3], rr_addr[2 + 3], rr_data[RR_WORDS + 3];
    static uint32_t rw_en[2 + 3], rw_addr[RWADDR_WORDS + 3], rw_data[RWDATA_WORDS + 3], rd_addr[2 + 3];
    static uint32_t rd_data[RR_WORDS + 3], tq_data[TQ_WORDS + 3], tk_data[TQ_WORDS + 3];
    std::vector<long long> wrote_at(ACT_WORDS, -1);
    top->go = 1; edge(); top->go = 0; top->mem_done = 0; top->eval();
    int status = 0;
    for (long long t = 0; t < limit; t++) {
        if (top->layer_done) { printf("cycles %lld\n", t - 1); status = 1; break; }
        uint64_t fin = (uint64_t) top->fin;
        for (int r = 0; r < R; r++) if (fin >> r & 1) printf("fin %lld %d\n", t, r);
        if (top->tas_valid)
            printf("tas %lld %d %llu\n", t, (int) top->tas_entry, (unsigned long long) top->tas_score);
        uint64_t err = (uint64_t) top->dp_err;
        if (err) { printf("overrun %lld %llu\n", t, (unsigned long long) err); status = 2; break; }
        uint64_t valid = (uint64_t) top->req_valid;
        uint64_t group = (uint64_t) top->req_group;
        get_words(top->req_bytes, req_bytes);
        get_words(top->req_word, w_req);
        for (int r = 0; r < R; r++) {
            if (!(valid >> r & 1)) continue;
            uint64_t bytes = field(req_bytes, 32 * r, 32);
            int g = (int) (group >> (2 * r) & 3);
            uint64_t rounded = (bytes + burst[g] - 1) / burst[g] * burst[g];
            long double start = freeat[g] > (long double) t ? freeat[g] : (long double) t;
            freeat[g] = start + rounded / rate[g];
            long long done = (long long) ceill(freeat[g] + lat[g] - 1e-9L);
            if (due[done] >> r & 1) { fprintf(stderr, "requester %d: two completions in one cycle\n", r); return 3; }
            due[done] |= 1ULL << r;
            if (r < C) slot_word[r][issued[r]++ % WB] = field(w_req, 64 * r, 64);
        }
        // sample the read addresses and the writes of this cycle
        get_words(top->w_slot, w_slot); get_words(top->w_addr, w_addr);
        get_words(top->x_raddr, x_addr); get_words(top->cr_addr, c_addr);
        get_words(top->wr_en, wr_en); get_words(top->wr_addr, wr_addr);
        get_words(top->wr_data, wr_data); get_words(top->wr_mask, wr_mask);
        uint64_t rc_addr = (uint64_t) top->rc_addr; bool rc_we = top->rc_we;
        get_words(top->rc_wdata, rc_wdata);
        get_words(top->rr_addr, rr_addr); get_words(top->rd_addr, rd_addr);
        get_words(top->rw_en, rw_en); get_words(top->rw_addr, rw_addr); get_words(top->rw_data, rw_data);
        uint64_t tq_addr = (uint64_t) top->tq_addr, tk_addr = (uint64_t) top->tk_addr;
        edge();
        // the replay cache's port (a synchronous memory), then the activation memory
        if (rc_addr >= (uint64_t) (RC_ENTRIES * RC_BEATS)) {
            if (rc_we) { printf("replay write out of range %lld\n", t); return 4; }
        } else if (rc_we) {
            memcpy(&data.replay[rc_addr * RC_WORDS], rc_wdata, 4 * RC_WORDS);
        } else {
            memcpy(rc_rdata, &data.replay[rc_addr * RC_WORDS], 4 * RC_WORDS);
        }
        memset(rr_data, 0, sizeof rr_data); memset(rd_data, 0, sizeof rd_data);
        read_port(data.act, field(rr_addr, 0, AB), EPB, rr_data, 0);
        read_port(data.act, field(rd_addr, 0, AB), EPB, rd_data, 0);
        memset(tq_data, 0, sizeof tq_data); memset(tk_data, 0, sizeof tk_data);
        read_port(data.act, tq_addr, TL, tq_data, 0);
        for (int j = 0; j < TL; j++)
            if (tk_addr + j < (uint64_t) (RC_ENTRIES * KV_DIM)) put_field(tk_data, 16 * j, 16, (uint16_t) data.tas_keys[tk_addr + j]);
        // registered reads (of the memory before this edge's writes), then the writes
        memset(w_data, 0, sizeof w_data); memset(x_data, 0, sizeof x_data); memset(c_data, 0, sizeof c_data);
        for (int c = 0; c < C; c++) {
            uint64_t word = slot_word[c][field(w_slot, SLOT_BITS * c, SLOT_BITS)];
            uint64_t beat = field(w_addr, 32 * c, 32);
            const uint32_t* src = nullptr;
            if ((word >> 60) == KIND_GEMV) {
                int idx = (int) ((word >> 51 & 3) * NB + (word >> 32 & ((1ULL << 19) - 1)));
                if (beat < data.block_beats[idx]) src = &data.beats[data.block_at[idx] + beat * BEAT_WORDS];
            } else if ((word >> 60) == KIND_ATTN) {
                int e = __builtin_ctzll((word & 0xFFFFFFFFULL) | (1ULL << 32));
                if (e < RC_ENTRIES && beat < data.kv_beats[e]) src = &data.beats[data.kv_at[e] + beat * BEAT_WORDS];
            }
            if (src) {
                if ((LANES * W_BITS) % 32 == 0) {
                    memcpy(&w_data[c * BEAT_WORDS], src, 4 * BEAT_WORDS);
                } else {
                    for (int b = 0; b < LANES * W_BITS; b += 32) {
                        int width = LANES * W_BITS - b < 32 ? LANES * W_BITS - b : 32;
                        put_field(w_data, c * LANES * W_BITS + b, width, src[b >> 5]);
                    }
                }
            }
            read_port(data.act, field(x_addr, AB * c, AB), 1, x_data, 16 * c);
            read_port(data.act, field(c_addr, AB * c, AB), PORT, c_data, 16 * c * PORT);
        }
        if (!write_ports(data.act, wrote_at, t, wr_en, wr_addr, wr_data, wr_mask, 2 * C, PORT, 2)) return 4;
        if (!write_ports(data.act, wrote_at, t, rw_en, rw_addr, rw_data, nullptr, 2, EPB, 2)) return 4;
        set_words(top->w_data, w_data); set_words(top->x_rdata, x_data); set_words(top->cr_data, c_data);
        set_words(top->rc_rdata, rc_rdata); set_words(top->rr_data, rr_data); set_words(top->rd_data, rd_data);
        set_words(top->tq_data, tq_data); set_words(top->tk_data, tk_data);
        auto it = due.find(t + 1);
        uint64_t pulse = it == due.end() ? 0 : it->second;
        top->mem_done = pulse;
        if (it != due.end()) due.erase(it);
        top->eval();
    }
    if (!status) printf("timeout %lld\n", limit);
    char path[4096];
    snprintf(path, sizeof path, "%s/act_out.bin", argv[3]);
    FILE* o = fopen(path, "wb");
    if (!o || fwrite(data.act.data(), 2, ACT_WORDS, o) != (size_t) ACT_WORDS) { perror(path); return 2; }
    fclose(o);
    snprintf(path, sizeof path, "%s/replay_out.bin", argv[3]);
    o = fopen(path, "wb");
    if (!o || fwrite(data.replay.data(), 4, data.replay.size(), o) != data.replay.size()) { perror(path); return 2; }
    fclose(o);
    return 0;
}
"""


def _register_code(ports: dict) -> str:
    lines = []
    for name in REGISTERS:
        width = len(ports[name])
        if width <= 64:
            lines.append(f"    top->{name} = rd(f);")
        else:
            words = -(-width // 32)
            lines.append(f"    for (int i = 0; i < {words}; i++) top->{name}[i] = (uint32_t) rd(f);")
    return "\n".join(lines)


def _constants(P: TopParams, ports: dict) -> str:
    words = {
        "R_WORDS": "req_word",
        "SLOT_WORDS": "w_slot",
        "WADDR_WORDS": "w_addr",
        "WDATA_WORDS": "w_data",
        "XADDR_WORDS": "x_raddr",
        "XDATA_WORDS": "x_rdata",
        "CDATA_WORDS": "cr_data",
        "WREN_WORDS": "wr_en",
        "WRADDR_WORDS": "wr_addr",
        "WRDATA_WORDS": "wr_data",
        "WRMASK_WORDS": "wr_mask",
        "RB_WORDS": "req_bytes",
        "RC_WORDS": "rc_wdata",
        "RR_WORDS": "rr_data",
        "RWADDR_WORDS": "rw_addr",
        "RWDATA_WORDS": "rw_data",
        "TQ_WORDS": "tq_data",
    }
    const = {
        "C": P.cores,
        "NB": P.max_blocks,
        "WB": P.weight_buffers,
        "LANES": P.lanes,
        "W_BITS": P.w_bits,
        "PORT": P.port,
        "AB": P.layout.addr_bits,
        "SLOT_BITS": bits_for(P.weight_buffers),
        "ACT_WORDS": P.layout.words,
        "KIND_GEMV": GEMV,
        "KIND_ATTN": ATTN,
        "BEAT_WORDS": beat_words(P),
        "EPB": P.replay_port_bits // P.replay_word_bits,
        "RC_ENTRIES": ENTRIES,
        "RC_BEATS": replay_beats(P),
        "TL": P.tas_lanes,
        "KV_DIM": P.layout.kv_dim,
        **{k: max(2, -(-len(ports[name]) // 32)) for k, name in words.items()},
    }
    return "\n".join(f"static const long long {k} = {v};" for k, v in const.items())


def replay_beats(P: TopParams) -> int:
    """Beats of one cached output through the replay port (whole beats: ``top_bench.top_params``)."""
    return P.replay_words * P.replay_word_bits // P.replay_port_bits


def beat_words(P: TopParams) -> int:
    """32-bit words of one weight beat (``lanes`` weights) in ``weights.bin``."""
    return -(-P.lanes * P.w_bits // 32)


def register_tokens(ports: dict, values: dict) -> list[str]:
    out = []
    for name in REGISTERS:
        width, v = len(ports[name]), int(values[name])
        if width <= 64:
            out.append(f"{v:x}")
        else:
            out += [f"{v >> (32 * i) & 0xFFFFFFFF:x}" for i in range(-(-width // 32))]
    return out


def build(P: TopParams, progress=None) -> Path:
    """The compiled simulation of the top level for ``P`` (cached)."""
    absent = missing("verilator")
    if absent:
        raise RuntimeError("verilator not installed")
    key = build_key("machine_top", repr(asdict(P)), sources_digest(), tool_version("verilator"), _TB)
    work = cache_dir("top", key)
    binary = work / "obj" / "Vmachine_top"
    if binary.exists():
        return binary
    t0 = time.perf_counter()
    ports = top_ports(P)
    clk = Signal(bool(0))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        machine_top(clk, **ports, P=P).convert(
            hdl="Verilog", path=str(work), name="machine_top", testbench=False
        )
    tb = _TB.replace("@REGISTERS@", _register_code(ports)).replace("@REQUESTERS@", str(P.cores + 2))
    tb = tb.replace("@CONSTANTS@", _constants(P, ports))
    (work / "tb.cpp").write_text(tb)
    if progress:
        progress(f"converted to Verilog in {time.perf_counter() - t0:.1f} s; compiling with Verilator")
    run(
        [
            "verilator",
            "--cc",
            "machine_top.v",
            "--exe",
            "tb.cpp",
            "--build",
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "-Wno-fatal",
            "-Wno-lint",
            "-Wno-style",
            "-Wno-UNOPTFLAT",
            "-j",
            "2",
            "--Mdir",
            "obj",
            "-CFLAGS",
            "-O2",
        ],
        cwd=work,
        timeout=7200,
    )
    if progress:
        progress(f"built in {time.perf_counter() - t0:.1f} s")
    return binary


def simulate(binary: Path, stimulus: list[str], limit: int, workdir: Path, score_bits: int):
    """Run the compiled top level on ``workdir``'s data files; (layer cycles or None on timeout, sorted
    record finishes, (cycle, cores) of a writer overrun or None, the TAS unit's score per entry). The
    activation memory after the run is left in ``workdir/act_out.bin``."""
    path = workdir / "stimulus.txt"
    path.write_text(" ".join(stimulus) + "\n")
    proc = run([str(binary), str(path), str(limit), str(workdir)], timeout=7200)
    cycles, fins, overrun, scores = None, [], None, {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "tas":
            raw = int(parts[3])
            scores[int(parts[2])] = raw - (1 << score_bits) if raw >> (score_bits - 1) else raw
        elif parts[0] == "fin":
            fins.append((int(parts[1]), int(parts[2])))
        elif parts[0] == "cycles":
            cycles = int(parts[1])
        elif parts[0] == "overrun":
            overrun = (int(parts[1]), int(parts[2]))
    return cycles, sorted(fins), overrun, scores
