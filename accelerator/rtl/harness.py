"""One harness, three views: the same job stream drives the RTL twin, the event component and the cost formula.

A :class:`Bench` describes one module for one parameter set and one list of jobs: its ports, its
MyHDL instance, the memories around it, how to load a job and stream its beats, and how to read its
outputs. :func:`simulate` runs the bench either on the MyHDL model (``backend="myhdl"``) or on the
converted Verilog under Icarus through the MyHDL VPI (``backend="icarus"``), with identical stimulus, and
returns per-job latencies (see :mod:`accelerator.rtl.common` for the convention) and the outputs.

:func:`check` is the three-view cross-check used by tests and ``cosim rtl check``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import myhdl
from myhdl import Cosimulation, Signal, StopSimulation, always, block, delay, instance, traceSignals

from accelerator.rtl.tools import build_key, cache_dir, check_private_file, run, sources_digest, tool_version

HALF_PERIOD = 5
MAX_JOB_CYCLES = 1 << 20


class Bench:
    """Base class of a module's test bench (subclasses fill in the module-specific parts)."""

    name: str = "module"

    def __init__(self, params: Any, jobs: list) -> None:
        self.params = params
        self.jobs = jobs

    # -- module specific ----------------------------------------------------------------------------
    def ports(self) -> dict[str, Signal]:
        raise NotImplementedError

    def module(self):
        """The module's ``@block`` function (its ports are :meth:`ports`, its parameters
        ``params.kwargs()``)."""
        raise NotImplementedError

    def dut(self, ports: dict[str, Signal]):
        """The MyHDL instance of the module, for conversion."""
        return self.module()(**ports, **self.params.kwargs())

    @block
    def environment(self, clk: Signal, ports: dict[str, Signal]):
        """Processes around the DUT (memories, stream sources); a ``@block`` so MyHDL accepts them."""

        @always(clk.posedge)
        def idle():
            pass

        return idle

    def preload(self, ports: dict[str, Signal], job: Any):
        """Cycles of set-up before a job (e.g. filling a buffer); not part of the job's latency."""
        return iter(())

    def finish(self, ports: dict[str, Signal]):
        """Cycles after the last job (e.g. draining a stream); not counted."""
        return iter(())

    def load(self, ports: dict[str, Signal], job: Any) -> None:
        """Drive a job's inputs for the edge that samples ``start`` (and its beat 0)."""

    def beat(self, ports: dict[str, Signal], job: Any, j: int) -> None:
        """Drive beat ``j`` (>= 1) of a job's input stream, sampled by the job's edge ``j``."""

    def observe(self, ports: dict[str, Signal], index: int) -> None:
        """Read outputs registered at the last edge (called once per cycle while a job runs)."""

    def outputs(self) -> Any:
        raise NotImplementedError

    # -- the other two views ------------------------------------------------------------------------
    def reference(self) -> Any:
        """Bit-exact expected outputs from a Python reference."""
        raise NotImplementedError

    def cost_cycles(self) -> list[int]:
        """Per-job latency from the cost-model primitive."""
        raise NotImplementedError

    def event_cycles(self) -> int:
        """Total cycles of the job stream from the event-model component (clock 1 Hz: 1 s = 1 cycle)."""
        raise NotImplementedError

    def key(self) -> str:
        """Identifies the converted HDL (module and parameters) for caching."""
        return hashlib.sha1(f"{self.name}{self.params!r}".encode()).hexdigest()[:12]

    def fresh(self) -> Bench:
        """The same bench without simulation state, so one bench can run on several backends."""
        return type(self)(self.params, self.jobs)


@dataclass
class SimResult:
    latencies: list[int]
    outputs: Any
    total_cycles: int = 0


def simulate(
    bench: Bench, backend: str = "myhdl", vcd: Path | None = None, record: dict | None = None
) -> SimResult:
    """Run ``bench``'s jobs back to back on the MyHDL model or on its converted Verilog (Icarus).

    ``record`` = ``{"inputs": [names], "outputs": [names]}`` also records, per rising edge, the input
    ports as sampled by that edge (``record["in"]``) and the output ports after it (``record["out"]``).
    """
    bench = bench.fresh()
    if backend not in ("myhdl", "icarus"):
        raise ValueError(f"unknown backend {backend!r}")
    clk = Signal(bool(0))
    ports = bench.ports()
    ports["clk"] = clk
    edge = [0]
    latencies: list[int] = []

    @block
    def testbench():
        if backend == "myhdl":
            module = bench.module()
            dut = module(**ports, **bench.params.kwargs())
        else:
            dut = _icarus_dut(bench, ports)

        @always(delay(HALF_PERIOD))
        def clock():
            clk.next = not clk

        @always(clk.posedge)
        def count():
            edge[0] += 1

        @instance
        def driver():
            ports["rst"].next = 1
            yield clk.negedge
            yield clk.negedge
            ports["rst"].next = 0
            yield clk.negedge
            for index, job in enumerate(bench.jobs):
                for _ in bench.preload(ports, job):
                    yield clk.negedge
                bench.load(ports, job)
                ports["start"].next = 1
                k0 = edge[0]
                yield clk.negedge
                ports["start"].next = 0
                j = 1
                while True:
                    bench.observe(ports, index)
                    if ports["done"]:
                        break
                    if edge[0] - k0 > MAX_JOB_CYCLES:
                        raise RuntimeError(f"{bench.name}: job {index} never finished")
                    bench.beat(ports, job, j)
                    j += 1
                    yield clk.negedge
                latencies.append(edge[0] - k0)
            for _ in bench.finish(ports):
                yield clk.negedge
            raise StopSimulation

        if record is None:
            return dut, clock, count, driver, bench.environment(clk, ports)
        record["in"], record["out"] = [], []
        sampled_in = [ports[n] for n in record["inputs"]]
        sampled_out = [ports[n] for n in record["outputs"]]

        @always(clk.posedge)
        def record_inputs():
            record["in"].append([int(s.val) for s in sampled_in])

        @always(clk.negedge)
        def record_outputs():
            record["out"].append([int(s.val) for s in sampled_out])

        return dut, clock, count, driver, bench.environment(clk, ports), record_inputs, record_outputs

    tb = testbench()
    if vcd is not None:
        vcd.parent.mkdir(parents=True, exist_ok=True)
        tb.config_sim(trace=True, directory=str(vcd.parent), filename=vcd.stem, tracebackup=False)
    try:
        tb.run_sim(quiet=1)
    finally:
        if vcd is not None:
            traceSignals.directory = None
            traceSignals.filename = None
    return SimResult(latencies, bench.outputs(), sum(latencies))


def cosim_key(bench: Bench) -> str:
    """Names the compiled co-simulation of ``bench``: its module and parameters, every
    ``accelerator/**/*.py`` source (the twins import the cost model and spec), the myhdl version (its
    converter writes the Verilog), the Icarus version and the VPI module it runs with."""
    from accelerator.rtl.cosim import vpi_key

    return build_key(
        bench.name, bench.key(), sources_digest(), myhdl.__version__, tool_version("iverilog"), vpi_key()
    )


def _icarus_dut(bench: Bench, ports: dict[str, Signal]):
    """Convert the module to Verilog (with MyHDL's co-simulation test bench) and attach it via the VPI."""
    from accelerator.rtl.cosim import vpi_module

    vpi = vpi_module()
    top = bench.name
    vvp = cache_dir("cosim") / f"{top}_{cosim_key(bench)}.vvp"
    if not vvp.is_file():  # build aside and move into place, so concurrent runs never see half a file
        with tempfile.TemporaryDirectory(dir=vvp.parent) as tmp:
            conv_ports = {**bench.ports(), "clk": Signal(bool(0))}
            inst = bench.dut(conv_ports)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Signal is not driven.*")
                inst.convert(hdl="Verilog", path=tmp, name=top, testbench=True)
            run(["iverilog", "-o", "sim.vvp", f"{top}.v", f"tb_{top}.v"], cwd=Path(tmp))
            os.replace(Path(tmp) / "sim.vvp", vvp)
    # An argument list, not a command string: MyHDL splits a string at every space, which broke a cache
    # path with a space in it. The VPI is named by its full path, so vvp never searches elsewhere for it.
    return Cosimulation(["vvp", "-m", str(vpi), str(check_private_file(vvp))], **ports)


@dataclass
class CheckResult:
    """One module, one case: the three views compared."""

    module: str
    params: Any
    rtl_cycles: list[int]
    cost_cycles: list[int]
    event_cycles: int
    outputs_equal: bool
    mismatch: str = ""

    @property
    def cycles_equal(self) -> bool:
        return self.rtl_cycles == self.cost_cycles and sum(self.rtl_cycles) == self.event_cycles

    @property
    def ok(self) -> bool:
        return self.cycles_equal and self.outputs_equal


def check(bench: Bench, backend: str = "myhdl") -> CheckResult:
    """Run the RTL view and compare its cycles with the cost formula and the event component, and its
    outputs with the Python reference."""
    res = simulate(bench, backend)
    ref = bench.reference()
    equal = _equal(res.outputs, ref)
    mismatch = "" if equal else f"rtl={_short(res.outputs)} ref={_short(ref)}"
    return CheckResult(
        module=bench.name,
        params=bench.params,
        rtl_cycles=res.latencies,
        cost_cycles=[int(c) for c in bench.cost_cycles()],
        event_cycles=int(bench.event_cycles()),
        outputs_equal=equal,
        mismatch=mismatch,
    )


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _short(x: Any, n: int = 200) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


def event_setup(hw_overrides: dict, dims_overrides: dict):
    """A cycle-denominated event-model world: clock 1e-6 MHz (1 s = 1 cycle), memory that never binds,
    and input vectors written at once (the testbenches preload a twin's input buffer before ``start``).

    Returns ``(env, cost, memory, timeline)`` for building event components.
    """
    import simpy

    from accelerator.cost import CostModel
    from accelerator.memory import MemoryServer
    from accelerator.spec import MAX_WIDTH, HardwareSpec, MemoryGroup
    from accelerator.timeline import Timeline
    from models.dims import ModelDims

    hw = HardwareSpec(
        clock_MHz=1e-6,
        memory={"main": MemoryGroup(bandwidth_GBps=1e12, efficiency=1.0)},
        **{"input_write_elems_per_cycle": MAX_WIDTH, **hw_overrides},
    )
    dims = ModelDims(**{"layers": 1, "hidden": 64, "heads": 1, "mlp_hidden": 64, **dims_overrides})
    env = simpy.Environment()
    timeline = Timeline()
    memory = {name: MemoryServer(env, name, group, timeline) for name, group in hw.memory.items()}
    return env, CostModel(hw, dims), memory, timeline
