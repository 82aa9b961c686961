"""The TAS unit: scores each batch entry's query against the aligned key and emits the replay bit.

Functional view (``temporal_attention_score``, ``decide``) is the floating-point reference; the event
view is a FIFO unit whose job time comes from ``cost.tas_cycles``. It starts on a core's entries as soon as
that core's QKV projection is done, so it overlaps the attention phase.
"""

from __future__ import annotations

import numpy as np
import simpy

from accelerator.cost import CostModel
from accelerator.memory import MemoryServer
from accelerator.timeline import Timeline
from accelerator.unit import Unit


def temporal_attention_score(q: np.ndarray, k_aligned: np.ndarray) -> float:
    """Mean over heads of q_h . k_h / sqrt(d_head); q and k are (heads, d_head)."""
    d_head = q.shape[-1]
    return float(np.mean(np.sum(q * k_aligned, axis=-1)) / np.sqrt(d_head))


def decide(tas: float, tau: float, strict: bool = False) -> bool:
    """Replay when TAS reaches tau (the paper's rule), or exceeds it (the reference code's)."""
    return tas > tau if strict else tas >= tau


class TasUnit(Unit):
    def __init__(
        self, env: simpy.Environment, cost: CostModel, memory: dict[str, MemoryServer], timeline: Timeline
    ):
        super().__init__(env, "tas", cost, memory, timeline)

    def submit(self, entries: int, ready_s: float) -> float:
        """Score ``entries`` entries whose queries are ready at ``ready_s``; return when all bits are out."""
        if entries <= 0:
            return ready_s
        return self.run(
            self.planned(entries, lambda: self.cost.tas(entries)), ready_s, "tas", entries=entries
        )
