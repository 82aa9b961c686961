"""The fixed-point decoder layer the RTL top level computes, and its numpy reference.

One decode step of one layer, per batch entry (integers throughout; ``sat`` saturates to the activation
width A = ``precision.activations_bits``, ``rs(v, s)`` is the rounding arithmetic shift
``(v + 2^(s-1)) >> s``):

* ``qkv = sat(rs(W_qkv x, s_qkv))``, split into q, k, v;
* TAS: ``mean_h(q_h . kprev_h)`` exactly as ``tas_unit`` computes it (``tas_unit.tas_fixed``);
* attention per head over the ``n`` cached keys and values K, V: scores ``s = K_h q_h``, ``m = max(s)``,
  ``p = EXP[min((m - s) >> s_score, 255)]`` (``EXP[i] = round((2^15 - 1) 2^(-i/16))``), ``acc = V_h^T p``,
  ``att_h = sat(rs(acc * floor(2^40 / sum(p)), 40 - s_value))``;
* ``h = sat(x + sat(rs(W_o att, s_o)))``;
* MLP (computing entries): ``g, u = sat(rs(W_up h, s_up))`` (gate rows first),
  ``a = sat(rs(SILU[g >> (A - 8)] * u, s_act))`` (``SILU[i] = round(silu(i / 4) * 2^10)``),
  ``d = sat(rs(W_down a, s_down))``; replayed entries: ``d`` = the replay cache's entry;
* the layer's output ``y = sat(h + d)``; computing entries' ``d`` is written to the replay cache.

Shifts are chosen from the dimensions (``Numerics.for_job``) so that every activation keeps a standard
deviation near 2^(A-5): a GEMV output's deviation is about sqrt(cols) x dev(W) x dev(x).

The inputs (x, weights, the cached keys and values, the aligned keys of the previous frame, the replay
cache) are drawn from a generator seeded by the workload's seed, the layer and the step: the numbers are
synthetic, the arithmetic is the hardware's. The current token's key and value are appended to the KV cache
by the host; attention reads the ``n`` keys the cost model counts as attended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from accelerator.rtl.tas_unit import tas_fixed

EXP_BITS = 15  # p = EXP[i] is unsigned, below 2^15
EXP_STEPS = 16  # table steps per halving
ATT_RECIP_BITS = 40  # floor(2^40 / sum(p)): sum(p) < 2^15 x keys
SILU_INDEX_BITS = 8
SILU_FRAC = 2  # SILU index i means g = i / 4
SILU_OUT_BITS = 10  # SILU[i] = silu(i / 4) x 2^10


def exp_table() -> tuple[int, ...]:
    top = (1 << EXP_BITS) - 1
    return tuple(int(round(top * 2.0 ** (-i / EXP_STEPS))) for i in range(256))


def silu_table() -> tuple[int, ...]:
    """Indexed by the two's-complement byte of i (0..127 positive, 128..255 negative)."""
    out = []
    for byte in range(256):
        i = byte - 256 if byte >= 128 else byte
        g = i / (1 << SILU_FRAC)
        out.append(int(round(g / (1.0 + math.exp(-g)) * (1 << SILU_OUT_BITS))))
    return tuple(out)


EXP = exp_table()
SILU = silu_table()


def rs(v: np.ndarray, s: int) -> np.ndarray:
    v = np.asarray(v, dtype=np.int64)
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def sat(v: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)


def _dev_uniform(bits: int) -> float:
    return (1 << bits) / math.sqrt(12.0)


@dataclass(frozen=True)
class Numerics:
    """The layer's number formats and shifts (host-written registers of the top level)."""

    act_bits: int
    w_bits: int
    kv_bits: int
    shifts: dict = field(hash=False)  # matrix -> requantisation shift
    s_act: int
    s_score: int
    s_value: int

    @classmethod
    def for_job(cls, job) -> Numerics:
        cost, pr, d = job.cost, job.cost.hw.precision, job.cost.dims
        A = pr.activations_bits
        dev_x = float(1 << (A - 5))
        dev_w = _dev_uniform(pr.weights_bits)

        def shift(dev: float) -> int:
            return max(0, int(round(math.log2(max(dev / dev_x, 1.0)))))

        shifts = {m: shift(math.sqrt(cols) * dev_w * dev_x) for m, (_, cols) in cost.matrices.items()}
        score_dev = math.sqrt(d.head_dim) * dev_x * _dev_uniform(pr.kv_bits)
        return cls(
            act_bits=A,
            w_bits=pr.weights_bits,
            kv_bits=pr.kv_bits,
            shifts=shifts,
            # SILU[i] carries 2^10 per unit, so SILU x u carries 2^10 x u's scale
            s_act=SILU_OUT_BITS,
            # one standard deviation of the scores spans EXP_STEPS table steps (a factor of 2)
            s_score=max(0, int(round(math.log2(max(score_dev / EXP_STEPS, 1.0))))),
            # the attention output is a weighted mean of V: bring the KV range onto the activation range
            s_value=max(0, (A - 1) - pr.kv_bits),
        )


@dataclass
class LayerData:
    """The layer's inputs for one step: integer arrays."""

    x: np.ndarray  # (B, hidden)
    weights: dict  # matrix -> (rows, cols), int8 or int16 holding w_bits values
    keys: np.ndarray  # (B, n, kv_dim)
    values: np.ndarray  # (B, n, kv_dim)
    k_prev: np.ndarray  # (B, kv_dim): the aligned keys of the previous frame (TAS)
    cache: np.ndarray  # (B, hidden): the replay cache's entries (last computed MLP outputs)


def _uniform(rng, bits, shape):
    """Symmetric quantisation's range (-(2^(b-1) - 1) .. 2^(b-1) - 1): zero mean, as trained weights."""
    dtype = np.int8 if bits <= 8 else np.int16
    top = (1 << (bits - 1)) - 1
    return rng.integers(-top, top + 1, size=shape, dtype=dtype)


def _normal(rng, bits, shape):
    dev = float(1 << (bits - 5)) if bits >= 8 else 1.0
    return sat(np.round(rng.normal(0.0, dev, size=shape)), bits)


def layer_data(job, layer: int, step: int, keys: int, seed: int) -> LayerData:
    cost, pr, d = job.cost, job.cost.hw.precision, job.cost.dims
    B, A = job.batch, pr.activations_bits
    wr = np.random.default_rng([seed, layer, 0x5EED])
    weights = {m: _uniform(wr, pr.weights_bits, shape) for m, shape in cost.matrices.items()}
    r = np.random.default_rng([seed, layer, step, 1])
    return LayerData(
        x=_normal(r, A, (B, d.hidden)),
        weights=weights,
        keys=_uniform(r, pr.kv_bits, (B, keys, d.kv_dim)).astype(np.int64),
        values=_uniform(r, pr.kv_bits, (B, keys, d.kv_dim)).astype(np.int64),
        k_prev=_uniform(r, pr.kv_bits, (B, d.kv_dim)).astype(np.int64),
        cache=_normal(r, A, (B, d.hidden)),
    )


def gemv(w: np.ndarray, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Exact integer W x for a batch of column vectors x (cols, B): float64 holds every partial sum of
    these widths exactly (|W x| < 2^(15+15+14) < 2^53), and BLAS makes the paper's sizes take seconds."""
    xf = np.asarray(x, dtype=np.float64)
    out = np.empty((w.shape[0], xf.shape[1]), dtype=np.int64)
    for r in range(0, w.shape[0], chunk):
        out[r : r + chunk] = np.rint(w[r : r + chunk].astype(np.float64) @ xf).astype(np.int64)
    return out


def kv_head(h: int, heads: int, kv_heads: int) -> int:
    """The key/value head query head ``h`` reads (grouped-query attention)."""
    return h // (heads // kv_heads)


def attention(q, keys, values, heads: int, kv_heads: int, head_dim: int, num: Numerics) -> np.ndarray:
    """One entry's attention output (q_dim,)."""
    out = np.empty(heads * head_dim, dtype=np.int64)
    exp = np.asarray(EXP, dtype=np.int64)
    for h in range(heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        g = kv_head(h, heads, kv_heads)
        kv = slice(g * head_dim, (g + 1) * head_dim)
        s = keys[:, kv] @ q[sl]
        p = exp[np.minimum((s.max() - s) >> num.s_score, 255)]
        acc = values[:, kv].T @ p
        recip = (1 << ATT_RECIP_BITS) // int(p.sum())
        out[sl] = sat(rs(acc * recip, ATT_RECIP_BITS - num.s_value), num.act_bits)
    return out


def reference(job, data: LayerData, num: Numerics, compute: np.ndarray) -> dict:
    """Every tensor the layer writes, per entry (arrays of shape (B, ...)); ``compute[e]`` is the
    entry's TAS decision (True: the MLP runs)."""
    d, A = job.cost.dims, num.act_bits
    W, sh = data.weights, num.shifts
    x = data.x
    qkv = sat(rs(gemv(W["qkv"], x.T).T, sh["qkv"]), A)
    q = qkv[:, : d.q_dim]
    groups = [kv_head(h, d.heads, d.kv_heads) for h in range(d.heads)]
    tas = np.array(
        [
            tas_fixed(
                q[e].reshape(d.heads, -1), data.k_prev[e].reshape(d.kv_heads, -1)[groups], 0, False, d.heads
            )[0]
            for e in range(len(x))
        ],
        dtype=np.int64,
    )
    att = np.stack(
        [
            attention(q[e], data.keys[e], data.values[e], d.heads, d.kv_heads, d.head_dim, num)
            for e in range(len(x))
        ]
    )
    h = sat(x + sat(rs(gemv(W["o"], att.T).T, sh["o"]), A), A)
    gu = sat(rs(gemv(W["up"], h.T).T, sh["up"]), A)
    g, u = gu[:, : d.mlp_hidden], gu[:, d.mlp_hidden :]
    silu = np.asarray(SILU, dtype=np.int64)[(g >> (A - SILU_INDEX_BITS)) & 0xFF]
    a = sat(rs(silu * u, num.s_act), A)
    d_mlp = sat(rs(gemv(W["down"], a.T).T, sh["down"]), A)
    mlp_out = np.where(np.asarray(compute)[:, None], d_mlp, data.cache)
    return {
        "qkv": qkv,
        "tas": tas,
        "att": att,
        "h": h,
        "gu": gu,
        "a": a,
        "d": mlp_out,
        "y": sat(h + mlp_out, A),
    }
