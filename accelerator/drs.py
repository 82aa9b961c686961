"""Dynamic Resource Scheduling: rebalance the computing batch entries over the cores, per layer.

As the paper describes it (docs/fastcar.md, "Dynamic Resource Scheduling (DRS)"): a 32-bit index register
(1 = compute the MLP, 0 = replay), one mapping register per entry naming its core, round-robin assignment
of the computing entries, and an instruction filter that drops instructions of replayed entries and
dispatches the rest to the mapped core.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from accelerator.cost import CostModel, drs_core_counts, drs_mapping

INDEX_REGISTER_BITS = 32


def check_batch(batch: int) -> None:
    if batch > INDEX_REGISTER_BITS:
        raise ValueError(f"DRS supports at most {INDEX_REGISTER_BITS} batch entries, got {batch}")


def index_register(compute: np.ndarray) -> int:
    """Pack per-entry compute bits into the index register (bit e = entry e)."""
    if len(compute) > INDEX_REGISTER_BITS:
        raise ValueError(f"DRS supports at most {INDEX_REGISTER_BITS} batch entries, got {len(compute)}")
    return int(sum(1 << e for e, bit in enumerate(compute) if bit))


def mapping_registers(index: int, batch: int, cores: int) -> list[int]:
    """Core of each entry after round-robin assignment; -1 for replayed entries."""
    bits = np.array([(index >> e) & 1 for e in range(batch)], dtype=bool)
    return drs_mapping(bits, cores).tolist()


def filter_instructions(
    instructions: Iterable[tuple[int, int]], mapping: list[int]
) -> Iterator[tuple[int, int, int]]:
    """Instructions are (entry, opcode); yield (core, entry, opcode) for entries that compute."""
    for entry, opcode in instructions:
        core = mapping[entry]
        if core >= 0:
            yield core, entry, opcode


class DrsScheduler:
    """Event view: one scheduling event per layer once its decisions are known."""

    def __init__(self, cost: CostModel, batch: int, cores: int) -> None:
        if batch > INDEX_REGISTER_BITS:
            raise ValueError(f"DRS supports at most {INDEX_REGISTER_BITS} batch entries, got {batch}")
        self.cost = cost
        self.batch = batch
        self.cores = cores
        self.events = 0
        self.seconds = float(cost.seconds(cost.drs(batch).cycles))
        self._counts: dict[int, np.ndarray] = {}

    def schedule(self, compute: np.ndarray | int) -> np.ndarray:
        """Entries per core after the round-robin assignment, given the compute bits (through the mapping
        registers) or just how many entries compute (the event loop's fast path: k computing entries give
        every core k // cores and the first k % cores cores one more, which is what the registers hold)."""
        self.events += 1
        if not isinstance(compute, int | np.integer):
            mapping = drs_mapping(np.asarray(compute, dtype=bool), self.cores)
            return np.bincount(mapping[mapping >= 0], minlength=self.cores)
        counts = self._counts.get(int(compute))
        if counts is None:
            counts = self._counts[int(compute)] = drs_core_counts(
                np.arange(self.batch) < int(compute), self.cores
            )
        return counts
