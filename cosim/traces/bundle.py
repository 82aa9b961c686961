"""What a trace source hands the simulator: the trace, the tau it was decided at, capture quality."""

from __future__ import annotations

from dataclasses import dataclass, field

from cosim.traces.schema import Trace


@dataclass
class TraceBundle:
    """The trace a run uses, the tau it was decided at, and capture quality metrics where a capture ran."""

    trace: Trace
    tau: float | None
    quality: dict = field(default_factory=dict)
    #: a live capture's decoded frames of prompt 0 as a PNG strip, dense row above the replaying row
    frames_png: bytes | None = field(default=None, repr=False)
