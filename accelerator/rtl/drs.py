"""DRS scheduler: index register, mapping registers, round-robin assignment and the instruction filter.

Timing of ``cost.drs_assign_cycles(batch)`` = batch + 1:

* the edge that samples ``start`` scans entry 0 straight from the ``index`` input (and loads the index
  shift register with the rest); each later edge scans one more entry, so entries 0..batch-1 take
  ``batch`` edges. A computing entry (bit = 1) gets the round-robin core counter, which then advances;
* one more edge commits the shadow mapping registers to the architectural ones (``done``).

The mapping registers are double buffered: the instruction filter keeps dispatching the current layer's
instructions from the committed copy while the next layer is being scheduled into the shadow copy.

Instruction filter (one register stage, one instruction per cycle): an instruction (entry, opcode) of a
replayed entry is dropped; otherwise it leaves with the entry's core and a one-hot ``dispatch`` strobe.

``batch`` must be between 1 and 32 (the index register's width).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from myhdl import ConcatSignal, ResetSignal, Signal, always_comb, always_seq, block, intbv

from accelerator.cost import drs_assign_cycles
from accelerator.drs import INDEX_REGISTER_BITS, filter_instructions, index_register, mapping_registers
from accelerator.rtl.common import bits_for, unpack, unsigned_sig, wire
from accelerator.rtl.harness import Bench, event_setup

ENTRIES = INDEX_REGISTER_BITS


def core_bits(cores: int) -> int:
    return max(1, bits_for(cores - 1))


@dataclass(frozen=True)
class DrsParams:
    cores: int = 4
    op_bits: int = 8  #: opcode width of a pre-compiled instruction

    def kwargs(self) -> dict:
        return {"CORES": self.cores, "OP_BITS": self.op_bits}


@block
def map_entry(clk, rst, scan_we, scan_pos, scan_bit, scan_core, clear, commit, core, valid, E):
    """Mapping register of entry E: a shadow written by the scan, committed as one."""
    sh_core = Signal(intbv(0)[len(core) :])
    sh_valid = Signal(bool(0))

    @always_seq(clk.posedge, reset=rst)
    def logic():
        if scan_we and scan_pos == E:
            sh_core.next = scan_core
            sh_valid.next = scan_bit
        elif clear:
            sh_valid.next = 0
        if commit:
            core.next = sh_core
            valid.next = sh_valid

    return logic


@block
def drs_scheduler(
    clk,
    rst,
    start,
    index,
    batch,
    busy,
    done,
    mapping,
    map_valid,
    instr_valid,
    instr_entry,
    instr_op,
    out_valid,
    out_core,
    out_entry,
    out_op,
    dispatch,
    CORES,
    OP_BITS,
    err=None,
):
    """Schedule one layer per job; filter and dispatch instructions at one per cycle at any time.

    Input guard: a ``start`` with ``batch`` outside 1..32 is refused: no entry is scanned, neither copy
    of the mapping registers changes, and the sampling edge registers ``done`` and ``err`` together (a
    one-edge job). ``err`` is 0 with the ``done`` of every accepted schedule; it may be left out.
    """
    if err is None:
        err = Signal(bool(0))
    bad = Signal(bool(0))
    refuse = Signal(bool(0))
    CW = core_bits(CORES)
    sh = Signal(intbv(0)[ENTRIES:])
    pos = Signal(intbv(0)[6:])
    batch_r = Signal(intbv(0)[6:])
    rr = Signal(intbv(0)[CW:])
    scanning = Signal(bool(0))
    commit = Signal(bool(0))
    scan_we = Signal(bool(0))
    scan_pos = Signal(intbv(0)[6:])
    scan_bit = Signal(bool(0))
    scan_core = Signal(intbv(0)[CW:])
    clear = Signal(bool(0))
    accept = Signal(bool(0))

    cores = [Signal(intbv(0)[CW:]) for _ in range(ENTRIES)]
    valids = [Signal(bool(0)) for _ in range(ENTRIES)]
    insts = [
        map_entry(clk, rst, scan_we, scan_pos, scan_bit, scan_core, clear, commit, cores[e], valids[e], E=e)
        for e in range(ENTRIES)
    ]
    map_bus = unsigned_sig(ENTRIES * CW)
    valid_bus = unsigned_sig(ENTRIES)
    insts.append(wire(ConcatSignal(*reversed(cores)), map_bus))
    insts.append(wire(ConcatSignal(*reversed(valids)), valid_bus))
    core_sel = Signal(intbv(0)[CW:])
    shifted = Signal(intbv(0)[ENTRIES * CW :])

    @always_comb
    def guard():
        bad.next = batch == 0 or batch > ENTRIES

    @always_comb
    def scan_port():
        accept.next = start and not busy and not bad
        refuse.next = start and not busy and bad
        if scanning:
            scan_we.next = 1
            scan_pos.next = pos
            scan_bit.next = sh[0]
            scan_core.next = rr
            clear.next = 0
        else:
            scan_we.next = start and not busy and not bad
            scan_pos.next = 0
            scan_bit.next = index[0]
            scan_core.next = 0
            clear.next = start and not busy and not bad

    @always_seq(clk.posedge, reset=rst)
    def control():
        commit.next = 0
        if scanning:
            sh.next = sh >> 1
            pos.next = pos + 1
            if sh[0]:
                rr.next = 0 if rr == CORES - 1 else rr + 1
            if pos + 1 == batch_r:
                scanning.next = 0
                commit.next = 1
        elif accept:
            busy.next = 1
            sh.next = index >> 1
            batch_r.next = batch
            pos.next = 1
            if index[0] and CORES > 1:
                rr.next = 1
            else:
                rr.next = 0
            if batch == 1:
                commit.next = 1
            else:
                scanning.next = 1
        if commit:
            busy.next = 0

    @always_seq(clk.posedge, reset=rst)
    def finish():
        done.next = commit or refuse
        err.next = refuse

    @always_comb
    def outputs():
        mapping.next = map_bus
        map_valid.next = valid_bus
        shifted.next = map_bus >> (instr_entry * CW)
        core_sel.next = shifted[CW:]

    @always_seq(clk.posedge, reset=rst)
    def filter_dispatch():
        if instr_valid and valid_bus[instr_entry]:
            out_valid.next = 1
            out_core.next = core_sel
            out_entry.next = instr_entry
            out_op.next = instr_op
            strobe = intbv(0)[CORES:]
            for c in range(CORES):
                strobe[c] = core_sel == c
            dispatch.next = strobe
        else:
            out_valid.next = 0
            dispatch.next = 0

    return insts, guard, scan_port, control, finish, outputs, filter_dispatch


# ---------------------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrsJob:
    compute: np.ndarray  #: (batch,) bool, 1 = compute the MLP
    instructions: list[tuple[int, int]]  #: (entry, opcode) of the layer, dispatched after scheduling


class DrsBench(Bench):
    """Jobs are per-layer scheduling events at one batch size; each layer's instructions then stream
    through the filter (outside the job's cycles, as on the chip where they overlap the next event)."""

    name = "drs_scheduler"

    def __init__(self, params: DrsParams, jobs: list[DrsJob], batch: int) -> None:
        super().__init__(params, jobs)
        if not 1 <= batch <= ENTRIES:
            raise ValueError(f"batch must be in 1..{ENTRIES}, got {batch}")
        self.batch = batch
        self._maps: list[list[int]] = []
        self._dispatched: list[list[tuple[int, int, int]]] = []
        self._pending: DrsJob | None = None

    def fresh(self) -> DrsBench:
        return DrsBench(self.params, self.jobs, self.batch)

    def ports(self) -> dict:
        p = self.params
        cw = core_bits(p.cores)
        return {
            "rst": ResetSignal(0, active=1, isasync=False),
            "start": Signal(bool(0)),
            "index": unsigned_sig(ENTRIES),
            "batch": unsigned_sig(6),
            "busy": Signal(bool(0)),
            "done": Signal(bool(0)),
            "mapping": unsigned_sig(ENTRIES * cw),
            "map_valid": unsigned_sig(ENTRIES),
            "instr_valid": Signal(bool(0)),
            "instr_entry": unsigned_sig(5),
            "instr_op": unsigned_sig(p.op_bits),
            "out_valid": Signal(bool(0)),
            "out_core": unsigned_sig(cw),
            "out_entry": unsigned_sig(5),
            "out_op": unsigned_sig(p.op_bits),
            "dispatch": unsigned_sig(p.cores),
            "err": Signal(bool(0)),
        }

    def module(self):
        return drs_scheduler

    def _stream(self, ports: dict, job: DrsJob):
        """Feed the committed layer's instructions through the filter and record what leaves it."""
        got: list[tuple[int, int, int]] = []
        for item in [*job.instructions, None]:
            if ports["out_valid"]:
                core = int(ports["out_core"].val)
                if int(ports["dispatch"].val) != 1 << core:
                    core = -99  # a wrong strobe fails the comparison
                got.append((core, int(ports["out_entry"].val), int(ports["out_op"].val)))
            if item is None:
                break
            entry, op = item
            ports["instr_valid"].next = 1
            ports["instr_entry"].next = entry
            ports["instr_op"].next = op
            yield
            ports["instr_valid"].next = 0
        self._dispatched.append(got)

    def preload(self, ports: dict, job: DrsJob):
        if self._pending is not None:
            yield from self._stream(ports, self._pending)
            yield
            self._pending = None

    def finish(self, ports: dict):
        if self._pending is not None:
            yield from self._stream(ports, self._pending)

    def load(self, ports: dict, job: DrsJob) -> None:
        ports["index"].next = index_register(job.compute)
        ports["batch"].next = self.batch

    def observe(self, ports: dict, index: int) -> None:
        if ports["done"]:
            p = self.params
            cores = unpack(int(ports["mapping"].val), core_bits(p.cores), ENTRIES, signed=False)
            valid = int(ports["map_valid"].val)
            self._maps.append([cores[e] if valid >> e & 1 else -1 for e in range(self.batch)])
            self._pending = self.jobs[index]

    def outputs(self) -> dict:
        counts = [
            np.bincount([c for c in m if c >= 0], minlength=self.params.cores).tolist() for m in self._maps
        ]
        return {"mapping": self._maps, "per_core": counts, "dispatched": self._dispatched}

    def reference(self) -> dict:
        from accelerator.drs import DrsScheduler

        p = self.params
        maps = [mapping_registers(index_register(j.compute), self.batch, p.cores) for j in self.jobs]
        env, cost, _, _ = event_setup({"cores": p.cores}, {})
        sched = DrsScheduler(cost, self.batch, p.cores)
        return {
            "mapping": maps,
            "per_core": [sched.schedule(j.compute).tolist() for j in self.jobs],
            "dispatched": [
                list(filter_instructions(j.instructions, m)) for j, m in zip(self.jobs, maps, strict=True)
            ],
        }

    def cost_cycles(self) -> list[int]:
        return [int(drs_assign_cycles(self.batch))] * len(self.jobs)

    def event_cycles(self) -> int:
        from accelerator.drs import DrsScheduler

        env, cost, _, _ = event_setup({"cores": self.params.cores}, {})
        return int(round(DrsScheduler(cost, self.batch, self.params.cores).seconds * len(self.jobs)))


def drs_case(rng: np.random.Generator) -> DrsBench:
    """Random core count, batch size, replay pattern per layer and instruction stream."""
    cores = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 16, 32]))
    batch = int(rng.integers(1, ENTRIES + 1))
    jobs = []
    for _ in range(int(rng.integers(1, 4))):
        density = rng.random()
        compute = rng.random(batch) < density
        instrs = [
            (int(rng.integers(0, batch)), int(rng.integers(0, 256)))
            for _ in range(int(rng.integers(1, 2 * batch + 2)))
        ]
        jobs.append(DrsJob(compute, instrs))
    return DrsBench(DrsParams(cores=cores), jobs, batch)
