"""Hardware description of a multi-core decode accelerator: the inputs of the one cost model.

Units are in the key names. Every field has a default so that a board preset only states what it knows;
the defaults describe a modest design, not any particular board.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from models.dims import SAFE_NAME, SAFE_NAME_RULE, InputModel

#: Upper bound of widths and latencies in cycles (lanes, port bits, pipeline depth): far above any FPGA,
#: low enough that cycle counts stay exact integers in the cost model.
MAX_WIDTH = 1 << 20
#: Bounds of rates and powers: wide enough for any board and for test harnesses (a 1 Hz clock, a memory
#: that never binds), narrow enough that every latency and energy the tool computes stays finite.
MIN_RATE = 1e-6
MAX_POWER_W = 1e6
MAX_ENERGY_PJ = 1e6
MAX_CAPACITY_GIB = 1e9
MAX_COUNT = 10**9


def at_least_min_rate(value: float) -> float:
    if value < MIN_RATE:
        raise ValueError(f"must be at least {MIN_RATE:g}: a smaller rate makes latency and energy overflow")
    return value


class _Strict(InputModel):
    model_config = ConfigDict(validate_assignment=True)  # with InputModel's: unknown keys, non-finite refused


class MemoryGroup(_Strict):
    """A set of memory channels that transfers are striped across (e.g. HBM pseudo-channels)."""

    channels: int = Field(1, gt=0, le=MAX_WIDTH, description="number of channels in the group")
    bandwidth_GBps: float = Field(gt=0, description="peak bandwidth of the whole group, GB/s (1e9 B/s)")
    efficiency: float = Field(
        0.8, gt=0, le=1, description="sustained fraction of peak for long sequential bursts"
    )
    capacity_GiB: float = Field(8.0, gt=0, le=MAX_CAPACITY_GIB, description="capacity, GiB")
    energy_pJ_per_byte: float = Field(
        60.0, ge=0, le=MAX_ENERGY_PJ, description="dynamic access energy, pJ per byte"
    )
    static_W: float = Field(
        0.0, ge=0, le=MAX_POWER_W, description="static power of the group's controllers and PHYs, W"
    )
    latency_ns: float = Field(
        100.0,
        ge=0,
        le=1e9,
        description="access latency, ns: from a request to its first data (paid once per transfer; "
        "requests are pipelined, so it does not occupy bandwidth)",
    )
    burst_bytes: int = Field(
        64, gt=0, le=MAX_WIDTH, description="burst size, bytes: every transfer is rounded up to whole bursts"
    )
    arbitration: Literal["round_robin", "fifo"] = Field(
        "round_robin",
        description="between concurrent requesters: round_robin serves them a burst each in turn (equal "
        "shares of the bandwidth); fifo serves one transfer at a time in arrival order",
    )

    @field_validator("bandwidth_GBps", "efficiency")
    @classmethod
    def _not_vanishing(cls, value: float) -> float:
        return at_least_min_rate(value)

    @property
    def sustained_Bps(self) -> float:
        return self.bandwidth_GBps * 1e9 * self.efficiency


class Placement(_Strict):
    """Which memory group holds each kind of data."""

    weights: str = Field("main", description="memory group holding the layer weights")
    kv_cache: str = Field("main", description="memory group holding the KV cache")
    replay_cache: str = Field("main", description="memory group holding the replay (MLP output) cache")


class Precision(_Strict):
    weights_bits: int = Field(8, description="weight precision, bits (4, 8 or 16)")
    activations_bits: int = Field(16, description="activation precision, bits")
    kv_bits: int = Field(16, description="KV-cache precision, bits")
    replay_cache_bits: int = Field(16, description="replay-cache (MLP output) precision, bits")

    @model_validator(mode="after")
    def _check(self) -> Precision:
        for name in ("weights_bits", "activations_bits", "kv_bits", "replay_cache_bits"):
            if getattr(self, name) not in (4, 8, 16, 32):
                raise ValueError(f"{name} must be one of 4, 8, 16, 32")
        return self


class Power(_Strict):
    """Energy = static power of each component x latency + dynamic energy per MAC and per byte moved.

    Setting every dynamic term to zero gives constant average power (energy proportional to latency).
    """

    static_W: float = Field(
        10.0, ge=0, le=MAX_POWER_W, description="board static + idle power not given to a component, W"
    )
    core_static_W: float = Field(0.0, ge=0, le=MAX_POWER_W, description="static power of each core, W")
    tas_static_W: float = Field(
        0.0,
        ge=0,
        le=MAX_POWER_W,
        description="static power of the TAS unit, DRS and replay-cache controller, W",
    )
    mac_energy_pJ: float = Field(
        1.0, ge=0, le=MAX_ENERGY_PJ, description="dynamic energy per MAC on a PE lane, pJ"
    )
    tas_energy_pJ: float = Field(
        1.0, ge=0, le=MAX_ENERGY_PJ, description="dynamic energy per TAS-unit MAC, pJ"
    )


class Resources(_Strict):
    """Board capacity, for fit checks against the RTL resource estimates."""

    luts: int = Field(0, ge=0, le=MAX_COUNT, description="LUTs on the device (0 = unknown)")
    ffs: int = Field(0, ge=0, le=MAX_COUNT, description="flip-flops on the device")
    dsps: int = Field(0, ge=0, le=MAX_COUNT, description="DSP slices on the device")
    brams: int = Field(0, ge=0, le=MAX_COUNT, description="36 Kb block RAMs on the device")
    urams: int = Field(
        0,
        ge=0,
        le=MAX_COUNT,
        description="288 Kb UltraRAMs on the device (0 = none): the operand buffers go there first",
    )


class HardwareSpec(_Strict):
    name: str = Field("custom", description="board/design name, for reports")
    source: str = Field("", description="where the board numbers come from")
    clock_MHz: float = Field(200.0, gt=0, le=1000, description="accelerator clock, MHz")
    cores: int = Field(2, gt=0, le=32, description="compute cores (DRS maps batch entries onto these)")
    lanes_per_core: int = Field(
        256, gt=0, le=MAX_WIDTH, description="MAC lanes per core (MACs per cycle per core)"
    )
    pe_pipeline_cycles: int = Field(
        3,
        ge=0,
        le=MAX_WIDTH,
        description="fill/drain latency of the PE lane pipeline, paid once per instruction",
    )
    tas_lanes: int = Field(16, gt=0, le=MAX_WIDTH, description="parallel MAC lanes of the TAS unit")
    replay_port_bits: int = Field(
        512, gt=0, le=MAX_WIDTH, description="data width of the replay-cache controller port, bits per cycle"
    )
    weights_shared_across_batch: bool = Field(
        True,
        description="weight dataflow. true: a core streams each weight block once and applies it to every "
        "entry it runs (one accumulator per entry in each lane); false: once per entry",
    )
    weight_buffers: int = Field(
        2,
        gt=0,
        le=64,
        description="on-chip operand buffers per core that the weight-stream engine fills ahead of the PE "
        "tile (2 = double buffering: the next block streams in while this one computes)",
    )
    weight_buffer_KiB: int = Field(
        8192,
        gt=0,
        le=MAX_WIDTH,
        description="size of one operand buffer, KiB: the compiler splits each weight matrix into row "
        "blocks (whole PE tiles) that fit one buffer",
    )
    input_buffers: int = Field(
        2,
        gt=0,
        le=2,
        description="input-vector buffers of the PE tile. 2 (ping-pong): an instruction's input is written "
        "while the instruction before it computes; 1: written before the instruction starts",
    )
    input_write_elems_per_cycle: int = Field(
        1, gt=0, le=MAX_WIDTH, description="elements per cycle the tile's input-buffer write port takes"
    )
    queue_depth: int = Field(
        16,
        gt=0,
        le=4096,
        description="instruction queue depth of each core and unit; a full queue stalls the dispatcher",
    )
    issue_cycles: int = Field(
        1,
        ge=0,
        le=64,
        description="cycles the sequencer takes to issue one instruction of the compiled stream (the RTL "
        "sequencer issues one per cycle; 0 reduces the instruction model to the phase model's schedule)",
    )
    memory: dict[str, MemoryGroup] = Field(
        default_factory=lambda: {"main": MemoryGroup(bandwidth_GBps=19.2, channels=1)},
        description="memory groups by name",
    )
    placement: Placement = Field(default_factory=Placement)
    precision: Precision = Field(default_factory=Precision)
    power: Power = Field(default_factory=Power)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("clock_MHz")
    @classmethod
    def _clock_not_vanishing(cls, value: float) -> float:
        return at_least_min_rate(value)

    @field_validator("memory")
    @classmethod
    def _check_groups(cls, memory: dict[str, MemoryGroup]) -> dict[str, MemoryGroup]:
        if not memory:
            raise ValueError("needs at least one memory group")
        for name in memory:
            if not SAFE_NAME.fullmatch(name):  # it becomes part of summary keys and report labels
                raise ValueError(f"group name {name!r}: use {SAFE_NAME_RULE}")
        return memory

    @model_validator(mode="after")
    def _check_placement(self) -> HardwareSpec:
        for what in ("weights", "kv_cache", "replay_cache"):
            group = getattr(self.placement, what)
            if group not in self.memory:
                raise ValueError(
                    f"placement.{what} names memory group {group!r}, which is not one of "
                    f"{', '.join(sorted(self.memory))}"
                )
        return self

    @property
    def clock_Hz(self) -> float:
        return self.clock_MHz * 1e6

    @property
    def peak_macs_per_s(self) -> float:
        return self.cores * self.lanes_per_core * self.clock_Hz
