"""What both executions of the cost model take in (a DecodeJob) and give back (a SimResult)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accelerator.cost import PHASES, CostModel


@dataclass
class DecodeJob:
    """The decode of one batch: who computes the MLP where, on which hardware, under which scheduler."""

    cost: CostModel
    compute: np.ndarray  # (batch, layers, steps) bool: True = compute the MLP, False = replay
    tokens_per_frame: int
    prompt_tokens: int
    drs: bool  # Dynamic Resource Scheduling on (else the static batch-to-core mapping)
    uses_tas: bool  # the TAS unit scores every entry from frame 1 on
    uses_cache: bool  # the replay cache is read on replay and refreshed after compute

    @property
    def batch(self) -> int:
        return self.compute.shape[0]

    @property
    def layers(self) -> int:
        return self.compute.shape[1]

    @property
    def steps(self) -> int:
        return self.compute.shape[2]

    @property
    def cores(self) -> int:
        return self.cost.hw.cores

    def context(self) -> np.ndarray:
        """Context length at each decode step: the prompt, the tokens decoded so far, and this one."""
        return self.prompt_tokens + np.arange(self.steps) + 1

    def scores(self, steps):
        """The TAS unit scores every entry from frame 1 on (frame 0 has no aligned key)."""
        return self.uses_tas & (np.asarray(steps) >= self.tokens_per_frame)

    def schedules(self, steps):
        """DRS runs a scheduling event once a layer's replay decisions exist (none in frame 0)."""
        return (self.drs and self.uses_cache) & (np.asarray(steps) >= self.tokens_per_frame)


@dataclass
class SimResult:
    latency_s: float
    layer_phase_s: np.ndarray  # (layers + 1, len(PHASES)): critical-path time; last row = per-step extra work
    layer_bytes: np.ndarray  # (layers,) bytes moved by each layer over the whole decode
    core_busy_s: np.ndarray  # (cores,) compute-busy time
    bytes_by_group: dict[str, float]
    pe_macs: float
    tas_macs: float
    drs_events: int
    replay_reads: int
    replay_writes: int
    timeline: dict | None = field(default=None, repr=False)
    machine: dict | None = field(default=None, repr=False)  # instruction granularity: what the machine did
    #: (steps, cores) compute-busy time of each core per decode step (its layers and extra work), and
    #: (steps,) when each step's last work ends: utilisation over time, which the totals above hide
    core_step_busy_s: np.ndarray | None = field(default=None, repr=False)
    step_end_s: np.ndarray | None = field(default=None, repr=False)

    @property
    def breakdown_s(self) -> dict[str, float]:
        return {p: float(v) for p, v in zip(PHASES, self.layer_phase_s.sum(axis=0), strict=True)}


def step_ends(ends: np.ndarray, steps: int) -> np.ndarray:
    """(steps,) when each decode step's work has ended, from the latest end of each kind of work per row
    (rows in execution order, ``steps x (layers + 1)`` of them; any trailing axes are reduced): a running
    maximum, so a step never ends before the one before it."""
    per_step = np.asarray(ends).reshape(steps, -1).max(axis=1)
    return np.maximum.accumulate(np.maximum(per_step, 0.0))


def critical_path(ends: np.ndarray, layers: int) -> np.ndarray:
    """Split the decode's time into (layers + 1, PHASES) seconds from the latest end of each kind of work
    in each layer of each step (rows in execution order: step by step, layers then the step's extra work;
    -inf where a row did none of a kind). Each kind is charged the time from the previous milestone to its
    own, so work hidden under an earlier kind (the TAS unit under attention) is charged nothing and the
    parts add up to the latency."""
    return charge_phases(np.ascontiguousarray(np.asarray(ends).T), layers)


def charge_phases(ends: np.ndarray, layers: int) -> np.ndarray:
    """:func:`critical_path` of ``ends`` given by kind of work, (PHASES, rows): a contiguous row per kind."""
    rows = np.maximum.accumulate(np.concatenate([[0.0], np.max(ends, axis=0)]))[:-1]
    out = np.zeros((layers + 1, len(PHASES)))
    prev = rows
    for p in range(len(PHASES)):
        if np.max(ends[p], initial=-np.inf) == -np.inf:
            continue  # no work of this kind: it is charged 0 and moves no milestone
        t = np.maximum(ends[p], prev)
        _add_by_layer(out[:, p], t - prev)
        prev = t
    return out


def _add_by_layer(out: np.ndarray, values: np.ndarray) -> None:
    """``out[i % len(out)] += values[i]`` in the order of ``i``, as ``np.add.at`` does: a sum over the steps
    of a (steps, layers + 1) view adds row after row, in that order too, and is much faster (numpy sums a
    single column pairwise instead, so that case keeps ``np.add.at``)."""
    if len(out) < 2 or len(values) % len(out):
        np.add.at(out, np.arange(len(values)) % len(out), values)
    else:
        out += values.reshape(-1, len(out)).sum(axis=0)
