"""The one cost model: cycles, bytes and energy of every operation of a decode step.

Three layers:

* micro-architecture primitives (``gemv_cycles``, ``tas_cycles``, ``drs_assign_cycles``,
  ``replay_transfer_cycles``, with the tile's input-buffer writes and attention per head built on them):
  the cycle count of one synthesizable block for one job. The first four have RTL twins under
  ``accelerator/rtl`` that must take exactly these cycles for the same stimulus.
* one instruction of the compiled stream (:meth:`CostModel.instruction`): what the instruction-level
  machine charges for it;
* per-phase demands (:class:`CostModel`): for one layer of one decode step, the same instructions summed
  per phase for the batch entries a core runs, which the phase and analytic models schedule.

Nothing else in the project knows how long an operation takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelerator.spec import HardwareSpec
from models.dims import ModelDims

# ---------------------------------------------------------------------------------------------------
# Micro-architecture primitives. Changing one of these is a change of hardware timing: the RTL twin's
# cross-check fails until the RTL and this file agree again.
# ---------------------------------------------------------------------------------------------------

#: Stages after the TAS lane MACs: lane product register, head accumulate, mean (shift) and compare.
TAS_TAIL_STAGES = 3
#: Cycles for the DRS scheduler to commit the mapping registers after scanning the index register.
DRS_COMMIT_CYCLES = 1
#: Replay-cache controller: address generation and read-data register.
REPLAY_LATENCY_CYCLES = 2
#: Output writer: the requantise stage (with the operand read) and the write stage.
WRITER_LATENCY_CYCLES = 2
#: A replay-cache write reads its first beat from the activation memory before the controller starts.
REPLAY_PREFETCH_CYCLES = 1
#: The TAS unit samples a query beat in the cycle it starts, so a TAS instruction reads its first beat from
#: the activation memory one cycle before its unit starts (the next entries' first beats are read while the
#: unit finishes the previous one).
TAS_PREFETCH_CYCLES = 1
#: Softmax unit: a head's reciprocal floor(2^40 / sum of its weights) is ready this many cycles after the
#: values job reads its last key: one to complete the sum, one per quotient bit (26). Ready at t means
#: usable from t + 1, as a tile's outputs at the end of its job are.
SOFTMAX_RECIP_CYCLES = 27


def ceil_div(a, b):
    """Integer ceiling division that also works elementwise on numpy arrays."""
    return -(-np.asarray(a) // b) if isinstance(a, np.ndarray) else -(-a // b)


def adder_tree_depth(lanes: int) -> int:
    """Pipeline stages of a binary adder tree over ``lanes`` products."""
    return max(0, int(lanes - 1).bit_length())


def gemv_cycles(rows, cols, lanes: int, pipeline_cycles: int):
    """y = W x on an output-stationary PE tile: each lane owns one output row and takes one input
    element per cycle, so a tile of ``lanes`` rows needs ``cols`` cycles; tiles issue back to back and
    the pipeline fills once per instruction."""
    return ceil_div(rows, lanes) * cols + pipeline_cycles


def output_drain_cycles(rows: int, lanes: int, elems_per_cycle: int) -> int:
    """The tail of a GEMV instruction: its output writer drains each tile's outputs ``elems_per_cycle``
    per cycle into the activation memory while the next tile computes, so only the last tile's drain and
    the writer's stages follow the tile; the instruction ends (its outputs are readable) after them."""
    last = (rows - 1) % lanes + 1
    return int(ceil_div(last, elems_per_cycle)) + WRITER_LATENCY_CYCLES


def input_write_cycles(elems, elems_per_cycle: int):
    """Write an input vector into the tile's input buffer through its write port."""
    return ceil_div(elems, elems_per_cycle)


def exposed_input_cycles(write_cycles, before_cycles, input_buffers: int):
    """Cycles a GEMV waits for its input vector. With two (ping-pong) buffers the input is written into
    the idle buffer while the instruction before it computes (an output is written back as it leaves the
    tile), so only the excess shows; with one buffer the tile reads it until the end, so the write follows."""
    if input_buffers >= 2:
        return np.maximum(np.asarray(write_cycles) - before_cycles, 0)
    return write_cycles


def attention_cycles(keys, heads: int, head_dim: int, lanes: int, pipeline_cycles: int, write_port: int):
    """One entry's attention on its core's tile. Per head, two tile jobs back to back: the scores (lanes
    own keys, q_h broadcast; the softmax unit keeps them and their maximum) and the values (lanes own the
    head's output dims, the softmax weights broadcast straight from the softmax unit; lanes beyond
    ``head_dim`` idle). A head's outputs leave through the output writer once the reciprocal of the
    weights' sum is ready, while the next head's scores compute; the next head's values wait until they
    have. The instruction ends when the last head's outputs are written."""
    scores = gemv_cycles(keys, head_dim, lanes, pipeline_cycles)
    values = gemv_cycles(head_dim, keys, lanes, pipeline_cycles)
    drain_from = np.maximum(values, np.asarray(keys) + SOFTMAX_RECIP_CYCLES)
    tail = drain_from + output_drain_cycles(head_dim, lanes, write_port)
    return scores + (heads - 1) * np.maximum(values + scores, tail) + tail


def weight_block_rows(rows: int, cols: int, lanes: int, weight_bits: int, buffer_bytes: int) -> list[int]:
    """Row blocks of a weight matrix as the compiler issues them: whole PE tiles (``lanes`` rows), as many
    as fit one operand buffer, and at least one tile."""
    tile_bytes = lanes * cols * weight_bits / 8
    per_block = max(1, int(buffer_bytes // tile_bytes)) * lanes
    return [min(per_block, rows - r) for r in range(0, rows, per_block)]


def tas_cycles(heads: int, head_dim: int, lanes: int) -> int:
    """TAS unit: per head, ``lanes`` products of q and the aligned key per cycle, reduced by an adder
    tree; heads stream back to back; the mean over heads and the compare with tau end the pipeline."""
    return heads * ceil_div(head_dim, lanes) + adder_tree_depth(lanes) + TAS_TAIL_STAGES


def drs_assign_cycles(batch: int) -> int:
    """DRS: scan the index register one bit per cycle, assigning each computing entry the next core
    round-robin, then commit the mapping registers."""
    return batch + DRS_COMMIT_CYCLES


def replay_transfer_cycles(words: int, word_bits: int, port_bits: int) -> int:
    """Replay-cache controller: move one cached MLP output of ``words`` elements through its port."""
    return ceil_div(words * word_bits, port_bits) + REPLAY_LATENCY_CYCLES


# ---------------------------------------------------------------------------------------------------
# Per-phase demands
# ---------------------------------------------------------------------------------------------------

PHASES = ("qkv", "attention", "tas", "drs", "mlp", "replay", "extra")
"""Kinds of work, in the order a decode step runs them. ``breakdown_s`` in summary.json uses these."""


@dataclass(frozen=True)
class InstructionCost:
    """An instruction applied to ``n`` entries takes ``fixed_cycles + n * cycles`` and ``n * macs``, and
    moves ``nbytes`` in memory group ``group``: once when ``streamed`` (the operand a GEMV or ATTN streams
    into a buffer: a weight block, an entry's keys and values), else per entry (TAS keys, replay moves)."""

    cycles: int
    macs: int
    nbytes: float
    group: str
    fixed_cycles: int = 0
    streamed: bool = False

    def total_cycles(self, n):
        return self.fixed_cycles + n * self.cycles

    def total_bytes(self, n):
        return self.nbytes if self.streamed else n * self.nbytes


@dataclass(frozen=True)
class Demand:
    """Work one core (or unit) does in one phase: compute cycles and bytes per memory group."""

    cycles: float
    bytes: dict[str, float]
    macs: float = 0.0


class CostModel:
    """Cycles and bytes of each phase of one layer of one decode step.

    ``ctx`` (context length including the current token) may be an int or a numpy array of them.
    """

    def __init__(
        self,
        hw: HardwareSpec,
        dims: ModelDims,
        *,
        sparse_sink_tokens: int = 0,
        sparse_window: int | None = None,
        drs_overhead_cycles: int = 0,
    ) -> None:
        self.hw = hw
        self.dims = dims
        self.sink = sparse_sink_tokens
        self.window = sparse_window
        self.drs_overhead_cycles = drs_overhead_cycles
        p = hw.precision
        self.w_bytes = p.weights_bits / 8
        self.kv_bytes = p.kv_bits / 8
        self.rc_bytes = p.replay_cache_bits / 8
        lanes, pipe = hw.lanes_per_core, hw.pe_pipeline_cycles
        d = dims
        up_rows = (2 if d.mlp_kind == "swiglu" else 1) * d.mlp_hidden
        #: The layer's weight matrices as (rows, cols): the operands of its GEMV instructions.
        self.matrices = {
            "qkv": (d.q_dim + 2 * d.kv_dim, d.hidden),
            "o": (d.hidden, d.q_dim),
            "up": (up_rows, d.hidden),
            "down": (d.hidden, d.mlp_hidden),
        }
        buffer_bytes = hw.weight_buffer_KiB * 1024
        #: Row blocks the compiler issues per matrix, each filling one operand buffer.
        self.blocks = {
            m: weight_block_rows(rows, cols, lanes, p.weights_bits, buffer_bytes)
            for m, (rows, cols) in self.matrices.items()
        }
        raw = {
            m: sum(gemv_cycles(r, self.matrices[m][1], lanes, pipe) for r in self.blocks[m])
            for m in self.matrices
        }
        # The input each matrix waits for, and the instruction that writes it (the layer before's down
        # projection for qkv).
        port, buffers = hw.input_write_elems_per_cycle, hw.input_buffers
        before = {"qkv": raw["down"], "up": raw["o"], "down": raw["up"]}
        wait = {
            m: int(exposed_input_cycles(input_write_cycles(self.matrices[m][1], port), c, buffers))
            for m, c in before.items()
        }
        wait["o"] = 0  # the attention instruction before it ends once its outputs are written
        #: Per entry, cycles of each block instruction of each matrix (the input wait on the first block).
        self.block_cycles = {
            m: [
                int(gemv_cycles(r, self.matrices[m][1], lanes, pipe)) + (wait[m] if i == 0 else 0)
                for i, r in enumerate(self.blocks[m])
            ]
            for m in self.matrices
        }
        #: Per block instruction of each matrix, its output drain (once per instruction, not per entry).
        self.block_drain = {
            m: [output_drain_cycles(r, lanes, port) for r in self.blocks[m]] for m in self.matrices
        }
        self.qkv_cycles = sum(self.block_cycles["qkv"])
        self.o_cycles = sum(self.block_cycles["o"])
        self.mlp_cycles = sum(self.block_cycles["up"]) + sum(self.block_cycles["down"])
        self.qkv_macs = d.hidden * (d.q_dim + 2 * d.kv_dim)
        self.o_macs = d.hidden * d.q_dim
        self.mlp_macs = d.mlp_params
        self.qkv_weight_bytes = self.qkv_macs * self.w_bytes
        self.o_weight_bytes = self.o_macs * self.w_bytes
        self.mlp_weight_bytes = self.mlp_macs * self.w_bytes
        self.tas_unit_cycles = tas_cycles(d.heads, d.head_dim, hw.tas_lanes)
        self.tas_macs = d.heads * d.head_dim
        self.replay_unit_cycles = replay_transfer_cycles(
            d.hidden, hw.precision.replay_cache_bits, hw.replay_port_bits
        )
        self.replay_bytes = d.hidden * self.rc_bytes
        self.kv_token_bytes = 2 * d.kv_dim * self.kv_bytes  # one token's key and value in one layer
        self.extra_cycles = ceil_div(d.extra_macs_per_token, lanes) if d.extra_macs_per_token else 0

    # -- context -------------------------------------------------------------------------------------
    def attended(self, ctx):
        """Tokens attended to: all of the context, or sink + local window under sparse attention."""
        if self.window is None:
            return ctx
        return np.minimum(ctx, self.sink + self.window)

    # -- phases per entry ------------------------------------------------------------------------------
    def attention_entry_cycles(self, ctx):
        """The attention instruction of one entry (its outputs, the O projection's input, written)."""
        d, hw = self.dims, self.hw
        return attention_cycles(
            self.attended(ctx),
            d.heads,
            d.head_dim,
            hw.lanes_per_core,
            hw.pe_pipeline_cycles,
            hw.input_write_elems_per_cycle,
        )

    def attention_cycles(self, ctx):
        """Attention of one entry, then its O projection: the attention phase of a core, per entry."""
        return self.attention_entry_cycles(ctx) + self.o_cycles

    def attention_macs(self, ctx):
        return 2 * self.dims.heads * self.dims.head_dim * self.attended(ctx) + self.o_macs

    def kv_bytes_per_entry(self, ctx):
        """Read the attended keys and values, append this token's key and value."""
        return self.kv_token_bytes * (self.attended(ctx) + 1)

    def weight_bytes(self, per_entry_bytes: float, entries):
        """Weights streamed by a core that runs ``entries`` batch entries of one phase."""
        entries = np.asarray(entries)
        if self.hw.weights_shared_across_batch:
            return np.where(entries > 0, per_entry_bytes, 0.0)
        return per_entry_bytes * entries

    # -- one instruction of the compiled stream (accelerator.isa) ---------------------------------------
    def instruction(self, op: str, matrix: str = "", block: int = 0, ctx: int = 0) -> InstructionCost:
        """What one instruction costs per entry it applies to, and the operand it streams in once (a
        weight block, an entry's keys and values) or the bytes it moves per entry (TAS, replay)."""
        pl, d = self.hw.placement, self.dims
        if op == "GEMV":
            rows, cols = self.blocks[matrix][block], self.matrices[matrix][1]
            return InstructionCost(
                self.block_cycles[matrix][block],
                rows * cols,
                rows * cols * self.w_bytes,
                pl.weights,
                fixed_cycles=self.block_drain[matrix][block],
                streamed=True,
            )
        if op == "ATTN":
            return InstructionCost(
                int(self.attention_entry_cycles(ctx)),
                int(self.attention_macs(ctx) - self.o_macs),
                float(self.kv_bytes_per_entry(ctx)),
                pl.kv_cache,
                streamed=True,
            )
        if op == "TAS":
            return InstructionCost(
                self.tas_unit_cycles,
                self.tas_macs,
                d.kv_dim * self.kv_bytes,
                pl.kv_cache,
                TAS_PREFETCH_CYCLES,
            )
        if op == "DRS":  # one cycle per bit scanned, the commit and the assumed overhead
            fixed = drs_assign_cycles(0) + self.drs_overhead_cycles
            return InstructionCost(drs_assign_cycles(1) - drs_assign_cycles(0), 0, 0.0, "", fixed)
        if op in ("REPLAY_RD", "REPLAY_WR"):
            # a read's last beat goes through the writer (d, and y = h + d) after the controller is done;
            # a write prefetches its first beat from the activation memory before the controller starts
            fixed = WRITER_LATENCY_CYCLES if op == "REPLAY_RD" else REPLAY_PREFETCH_CYCLES
            return InstructionCost(self.replay_unit_cycles, 0, self.replay_bytes, pl.replay_cache, fixed)
        if op == "EXTRA":
            return InstructionCost(self.extra_cycles, d.extra_macs_per_token, 0.0, "")
        return InstructionCost(0, 0, 0.0, "")

    # -- phase demands for a core running `n` entries --------------------------------------------------
    def drains(self, n, *matrices: str):
        """The output drains of a core's block instructions of ``matrices`` for ``n`` entries: the
        compiler issues each block once per core when the entries share the streamed weights, else once
        per entry (accelerator.compiler)."""
        total = sum(sum(self.block_drain[m]) for m in matrices)
        if not self.hw.weights_shared_across_batch:
            return n * total
        return np.where(np.asarray(n) > 0, total, 0) if isinstance(n, np.ndarray) else (total if n > 0 else 0)

    def qkv(self, n) -> Demand:
        pl = self.hw.placement
        return Demand(
            cycles=n * self.qkv_cycles + self.drains(n, "qkv"),
            bytes={pl.weights: self.weight_bytes(self.qkv_weight_bytes, n)},
            macs=n * self.qkv_macs,
        )

    def attention(self, n, ctx) -> Demand:
        pl = self.hw.placement
        by = add_bytes(
            {pl.kv_cache: n * self.kv_bytes_per_entry(ctx)},
            {pl.weights: self.weight_bytes(self.o_weight_bytes, n)},
        )
        return Demand(
            cycles=n * self.attention_cycles(ctx) + self.drains(n, "o"),
            bytes=by,
            macs=n * self.attention_macs(ctx),
        )

    def _per_entry(self, op: str, n) -> Demand:
        """``n`` entries of an instruction that moves its bytes per entry (the TAS unit, the replay-cache
        controller, the per-token extra work)."""
        c = self.instruction(op)
        return Demand(
            cycles=np.where(np.asarray(n) > 0, c.total_cycles(n), 0),
            bytes={c.group: c.total_bytes(n)} if c.group else {},
            macs=n * c.macs,
        )

    def tas(self, n) -> Demand:
        """TAS unit for ``n`` entries: reads each entry's aligned key from the KV cache."""
        return self._per_entry("TAS", n)

    def drs(self, batch: int) -> Demand:
        return self._per_entry("DRS", batch)

    def mlp(self, n) -> Demand:
        return Demand(
            cycles=n * self.mlp_cycles + self.drains(n, "up", "down"),
            bytes={self.hw.placement.weights: self.weight_bytes(self.mlp_weight_bytes, n)},
            macs=n * self.mlp_macs,
        )

    def replay(self, reads, writes) -> Demand:
        """Replay-cache controller: ``reads`` replayed outputs fetched (one instruction), ``writes`` fresh
        outputs stored (another)."""
        reads, writes = np.asarray(reads), np.asarray(writes)
        rd, wr = self.instruction("REPLAY_RD"), self.instruction("REPLAY_WR")
        cycles = (
            (reads + writes) * rd.cycles
            + np.where(reads > 0, rd.fixed_cycles, 0)
            + np.where(writes > 0, wr.fixed_cycles, 0)
        )
        return Demand(cycles=cycles, bytes={rd.group: (reads + writes) * rd.nbytes}, macs=0)

    def extra(self, n) -> Demand:
        return self._per_entry("EXTRA", n)

    # -- time -------------------------------------------------------------------------------------------
    def seconds(self, cycles):
        return np.asarray(cycles) / self.hw.clock_Hz

    def transfer_seconds(self, group: str, nbytes):
        return np.asarray(nbytes) / self.hw.memory[group].sustained_Bps

    def roofline_seconds(self, demand: Demand):
        """A phase on one core with its transfers overlapped: the slower of compute and each memory group."""
        t = self.seconds(demand.cycles)
        for group, nbytes in demand.bytes.items():
            t = np.maximum(t, self.transfer_seconds(group, nbytes))
        return t

    # -- energy -----------------------------------------------------------------------------------------
    def energy_breakdown_j(
        self, latency_s: float, pe_macs: float, tas_macs: float, bytes_by_group: dict[str, float]
    ) -> dict[str, float]:
        """Energy by component: static power over the whole latency, dynamic energy per operation."""
        pw = self.hw.power
        out = {
            "board_static": pw.static_W * latency_s,
            "cores_static": pw.core_static_W * self.hw.cores * latency_s,
            "cores_dynamic": pe_macs * pw.mac_energy_pJ * 1e-12,
            "units_static": pw.tas_static_W * latency_s,
            "tas_dynamic": tas_macs * pw.tas_energy_pJ * 1e-12,
        }
        for group, spec in self.hw.memory.items():
            out[f"memory_{group}_static"] = spec.static_W * latency_s
            out[f"memory_{group}_dynamic"] = bytes_by_group.get(group, 0.0) * spec.energy_pJ_per_byte * 1e-12
        return out


def add_bytes(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out[k] + v if k in out else v
    return out


def static_core_counts(active: np.ndarray, cores: int) -> np.ndarray:
    """Entries each core runs under the static batch-to-core mapping (entry e on core e mod cores).

    ``active`` is (batch, ...) bool; the result is (cores, ...) int.
    """
    batch = active.shape[0]
    pad = (-batch) % cores
    if pad:
        active = np.concatenate([active, np.zeros((pad,) + active.shape[1:], dtype=active.dtype)])
    return count_true(active.reshape((-1, cores) + active.shape[1:]))


def count_true(active: np.ndarray) -> np.ndarray:
    """``active.sum(axis=0)`` (int64) of a bool array: counted in bytes when the count fits one, which is
    several times faster than numpy's bool-to-int64 sum."""
    if active.dtype == bool and len(active) < 256:
        return active.sum(axis=0, dtype=np.uint8).astype(np.int64)
    return active.sum(axis=0)


def drs_core_counts(active: np.ndarray, cores: int) -> np.ndarray:
    """Entries each core runs after DRS assigns the computing entries round-robin."""
    return drs_counts(count_true(active), cores)


def drs_counts(k: np.ndarray, cores: int) -> np.ndarray:
    """:func:`drs_core_counts` from the number of computing entries ``k`` (for callers that have it)."""
    c = np.arange(cores).reshape((cores,) + (1,) * np.ndim(k))
    return k // cores + (c < k % cores)


def drs_mapping(index_bits: np.ndarray, cores: int) -> np.ndarray:
    """The mapping registers DRS writes: computing entry number k goes to core k mod cores; replayed
    entries keep -1 (their instructions are dropped)."""
    mapping = np.full(index_bits.shape, -1, dtype=np.int64)
    computing = np.flatnonzero(index_bits)
    mapping[computing] = np.arange(len(computing)) % cores
    return mapping
