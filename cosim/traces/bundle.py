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
