"""Memory capacity: do a design's data fit the memory groups the placement puts them in?

Every byte count comes from the one cost model (:class:`accelerator.cost.CostModel`): the bytes of a
layer's weight matrices, of one token's key and value in one layer, of one cached MLP output. A group
holds what ``hardware.placement`` assigns to it:

* weights: every decoder layer's Q/K/V/O and MLP matrices at ``weights_bits``, the matrices the cost
  model streams. The token embedding and the output head are not counted, as the cost model never moves
  them (a few percent of a 7B model);
* KV cache: the key and value of every token of the final context (prompt tokens plus every decoded
  token), in every layer, for every batch entry, at ``kv_bits``. Sparse attention does not shrink it: the
  TAS unit reads the key one frame back, and the decode keeps the whole context;
* replay cache (policies that replay): one MLP output per batch entry, layer and position within a frame
  (the previous frame's output there), at ``replay_cache_bits``.

Capacities are in GiB (2**30 bytes), as board data sheets give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerator.cost import CostModel

GIB = float(1 << 30)


@dataclass(frozen=True)
class Holding:
    """One kind of data in a memory group."""

    what: str
    bytes: float
    detail: str


@dataclass
class GroupUse:
    """What one memory group must hold, and what it has."""

    group: str
    capacity_bytes: float
    holdings: list[Holding] = field(default_factory=list)

    @property
    def need_bytes(self) -> float:
        return sum(h.bytes for h in self.holdings)

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.capacity_bytes

    def describe(self) -> str:
        """One line: the group, what it needs (with the breakdown) and what it has."""
        parts = " + ".join(f"{h.what} {gib(h.bytes)} ({h.detail})" for h in self.holdings)
        return f"needs {gib(self.need_bytes)} = {parts}, has {gib(self.capacity_bytes)}"


def gib(nbytes: float) -> str:
    """Bytes as GiB with enough digits to tell a shortfall from a fit."""
    value = nbytes / GIB
    return f"{value:.4g} GiB" if value >= 1e-3 else f"{nbytes:.4g} B"


def memory_use(
    cost: CostModel, *, batch: int, context_tokens: int, tokens_per_frame: int, replay_cache: bool
) -> dict[str, GroupUse]:
    """Bytes each memory group holds at the end of the decode (when the KV cache is largest)."""
    hw, d = cost.hw, cost.dims
    use = {name: GroupUse(name, g.capacity_GiB * GIB) for name, g in hw.memory.items()}
    layer_weights = cost.qkv_weight_bytes + cost.o_weight_bytes + cost.mlp_weight_bytes
    p = hw.precision
    use[hw.placement.weights].holdings.append(
        Holding("weights", d.layers * layer_weights, f"{d.layers} layers at {p.weights_bits} bits")
    )
    use[hw.placement.kv_cache].holdings.append(
        Holding(
            "KV cache",
            batch * context_tokens * d.layers * cost.kv_token_bytes,
            f"batch {batch} x {context_tokens} tokens x {d.layers} layers at {p.kv_bits} bits",
        )
    )
    if replay_cache:
        use[hw.placement.replay_cache].holdings.append(
            Holding(
                "replay cache",
                batch * d.layers * tokens_per_frame * cost.replay_bytes,
                f"batch {batch} x {d.layers} layers x {tokens_per_frame} positions at "
                f"{p.replay_cache_bits} bits",
            )
        )
    return use


def shortfalls(use: dict[str, GroupUse]) -> list[GroupUse]:
    """The groups that do not hold what is placed in them."""
    return [u for u in use.values() if not u.fits]
