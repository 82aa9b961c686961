"""Token-by-token decoding with a KV cache and FastCar's TAS-gated MLP replay inside the forward pass.

Per decode step s (frame f, spatial token i) and layer l, after attention:
  TAS = mean over heads of q_s . k_{s-N} / sqrt(d_head)    (q post-RoPE by default; k from the KV cache)
and the policy decides, per batch row, whether the MLP output is computed or replayed from the cache of
position i (filled at frame f-1, and refreshed with the replayed value, i.e. left as is). Replaying rows are
really skipped: the MLP runs on the gathered computing rows only, so CPU time shows the saving too.
Attention, K and V are always computed, so the KV cache stays exact.

With ``policy=None`` this is the plain model's decode (no TAS, no decisions): the reference the dense
policy must reproduce bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from models.policies import DecisionContext, ReplayPolicy
from models.transformer import ARVideoTransformer, apply_rope


@dataclass
class DecodeOptions:
    """FastCar and sparse-attention switches; the defaults are the paper's form."""

    query_pre_rope: bool = False  # reference code: query before RoPE (key is always post-RoPE)
    strict: bool = False  # informational here; TasPolicy applies it
    staleness_cap: int | None = None  # force a compute after this many consecutive replays
    no_twice_in_row: bool = False  # a position that replayed in frame f-1 must compute in frame f
    cfg_coherent: bool = False  # a CFG pair replays only if both copies would
    sparse_sink_tokens: int = 0  # StreamingLLM attention sink (first positions always attended)
    sparse_window: int | None = None  # most recent positions attended (None = full attention)
    measure_mlp_error: bool = False  # also compute the true MLP on replayed rows to log the error


@dataclass
class SamplingOptions:
    cfg: bool = True
    cfg_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    seed: int = 0


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # (P, T*N) sampled codes, one row per prompt
    tas: np.ndarray  # (B, L, S) float32, NaN where not computed (frame 0 / plain decode)
    replay: np.ndarray  # (B, L, S) bool
    mlp_rel_error: np.ndarray | None  # (B, L, S) float32, NaN where not computed
    mlp_rows: int  # MLP row evaluations actually performed (for the skip check)
    seconds: float
    batch_labels: list[int] = field(default_factory=list)  # class per batch row (-1 = unconditional)
    logits: torch.Tensor | None = None  # (P, S, codebook) guided logits, when asked for


def _attend(q: torch.Tensor, keys: torch.Tensor, vals: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, kvh, g, hd); keys/vals (B, kvh, S, hd) -> (B, kvh * g * hd)."""
    scores = torch.matmul(q, keys.transpose(-1, -2)) * scale
    out = torch.matmul(torch.softmax(scores, dim=-1), vals)
    return out.reshape(q.shape[0], -1)


def temporal_attention_score(q: torch.Tensor, k_prev: torch.Tensor, scale: float) -> torch.Tensor:
    """TAS per batch row: mean over query heads of q_h . k_{g(h)} * scale, g(h) the head's KV group.

    q (B, heads, hd) is this step's query; k_prev (B, kv_heads, hd) the cached key of the aligned token one
    frame earlier. GQA: query head h uses KV head h // (heads / kv_heads), as in attention itself.
    """
    b, heads, hd = q.shape
    kvh = k_prev.shape[1]
    qg = q.reshape(b, kvh, heads // kvh, hd)
    return (qg * k_prev[:, :, None]).sum(-1).mean(dim=(1, 2)) * scale


def attention_positions(step: int, sink: int, window: int | None) -> torch.Tensor | None:
    """Key positions a StreamingLLM cache keeps at ``step``; None = all of 0..step."""
    if window is None or step + 1 <= sink + window:
        return None
    recent = torch.arange(step - window + 1, step + 1)
    return torch.cat([torch.arange(min(sink, step + 1)), recent])


@torch.inference_mode()
def decode(
    model: ARVideoTransformer,
    labels: list[int],
    frames: int | None = None,
    policy: ReplayPolicy | None = None,
    options: DecodeOptions | None = None,
    sampling: SamplingOptions | None = None,
    keep_logits: bool = False,
    force_tokens: torch.Tensor | None = None,
) -> DecodeResult:
    """Generate one video per class label, CFG copies in the same batch (rows [cond..., uncond...]).

    ``force_tokens`` (P, T*N): feed these tokens back instead of the sampled ones (teacher forcing on,
    e.g., the dense run's video), so the sampled tokens measure each step's error without the drift that
    follows a first differing token.
    """
    import time

    opts = options or DecodeOptions()
    samp = sampling or SamplingOptions()
    cfg = model.config
    dims = cfg.dims
    n = cfg.tokens_per_frame
    frames = frames or cfg.frames
    steps = frames * n
    model.ensure_rope(steps + 1)
    p = len(labels)
    row_labels = list(labels) + ([-1] * p if samp.cfg else [])
    b = len(row_labels)
    layers = dims.layers
    kvh, hd, heads = dims.kv_heads, dims.head_dim, dims.heads
    g = heads // kvh
    scale = 1.0 / math.sqrt(hd)
    dev = model.lm_head.weight.device
    dtype = model.lm_head.weight.dtype

    kcache = torch.zeros(layers, b, kvh, steps, hd, dtype=dtype, device=dev)
    vcache = torch.zeros_like(kcache)
    track = policy is not None
    out_cache = torch.zeros(layers, b, n, dims.hidden, dtype=dtype, device=dev)
    in_cache = torch.zeros_like(out_cache)
    stale = torch.zeros(layers, b, n, dtype=torch.long)
    last_rep = torch.zeros(layers, b, n, dtype=torch.bool)
    tas_log = np.full((b, layers, steps), np.nan, np.float32)
    rep_log = np.zeros((b, layers, steps), bool)
    need_err = track and (opts.measure_mlp_error or policy.needs_true_error)
    err_log = np.full((b, layers, steps), np.nan, np.float32) if need_err else None
    need_prev_in = track and policy.needs_prev_input
    if policy is not None:
        policy.reset(b, layers, frames, n, samp.seed)

    gen = torch.Generator().manual_seed(samp.seed)
    k_codes = cfg.codebook_size
    lab = torch.tensor(row_labels)
    ids = torch.where(lab < 0, torch.full_like(lab, cfg.uncond_token), lab + cfg.class_token_base).to(dev)
    class_vec = model.class_vector(lab)
    tokens = torch.zeros(p, steps, dtype=torch.long)
    mlp_rows = 0
    kept_logits = torch.zeros(p, steps, k_codes) if keep_logits else None
    t0 = time.perf_counter()
    for s in range(steps):
        f, i = divmod(s, n)
        x = model.model.embed_tokens(ids)
        if class_vec is not None:
            x = x + class_vec
        cos, sin = model.rope_cos[s], model.rope_sin[s]
        keep = attention_positions(s, opts.sparse_sink_tokens, opts.sparse_window)
        for li, layer in enumerate(model.model.layers):
            att = layer.self_attn
            h = layer.input_layernorm(x)
            q = att.q_proj(h).view(b, heads, hd)
            k = att.k_proj(h).view(b, kvh, hd)
            v = att.v_proj(h).view(b, kvh, hd)
            q_rot = apply_rope(q, cos, sin)
            kcache[li, :, :, s] = apply_rope(k, cos, sin)
            vcache[li, :, :, s] = v
            keys, vals = kcache[li, :, :, : s + 1], vcache[li, :, :, : s + 1]
            if keep is not None:
                keys, vals = keys[:, :, keep], vals[:, :, keep]
            x = x + att.o_proj(_attend(q_rot.view(b, kvh, g, hd), keys, vals, scale))
            mlp_in = layer.post_attention_layernorm(x)
            if not track:
                x = x + layer.mlp(mlp_in)
                mlp_rows += b
                continue
            if f > 0:
                tas = temporal_attention_score(
                    q if opts.query_pre_rope else q_rot, kcache[li, :, :, s - n], scale
                )
                eligible = torch.ones(b, dtype=torch.bool)
                if opts.staleness_cap is not None:
                    eligible &= stale[li, :, i] < opts.staleness_cap
                if opts.no_twice_in_row:
                    eligible &= ~last_rep[li, :, i]
            else:
                tas = torch.full((b,), float("nan"))
                eligible = torch.zeros(b, dtype=torch.bool)
            true_out = None
            true_err = None
            if need_err and f > 0:
                true_out = layer.mlp(mlp_in)
                mlp_rows += b
                cached = out_cache[li, :, i]
                true_err = (cached - true_out).norm(dim=-1) / true_out.norm(dim=-1).clamp(min=1e-12)
            ctx = DecisionContext(li, s, f, i, tas.float(), eligible, mlp_in, in_cache[li, :, i], true_err)
            replay = policy.wants_replay(ctx) & eligible
            if opts.cfg_coherent and samp.cfg:
                pair = replay[:p] & replay[p:]
                replay = torch.cat([pair, pair])
            policy.commit(ctx, replay)
            if true_out is not None:
                out = torch.where(replay[:, None], out_cache[li, :, i], true_out)
            elif not bool(replay.any()):
                out = layer.mlp(mlp_in)
                mlp_rows += b
            else:
                out = out_cache[li, :, i].clone()
                idx = torch.nonzero(~replay).squeeze(1)
                if idx.numel():
                    out[idx] = layer.mlp(mlp_in[idx])
                    mlp_rows += int(idx.numel())
            out_cache[li, :, i] = out  # replayed rows write back the value they used
            if need_prev_in:
                in_cache[li, :, i] = mlp_in
            if opts.staleness_cap is not None:
                stale[li, :, i] = torch.where(replay, stale[li, :, i] + 1, torch.zeros_like(stale[li, :, i]))
            if opts.no_twice_in_row:
                last_rep[li, :, i] = replay
            tas_log[:, li, s] = tas.float().numpy()
            rep_log[:, li, s] = replay.numpy()
            if err_log is not None and true_err is not None:
                err_log[:, li, s] = true_err.float().numpy()
            x = x + out
        logits = model.lm_head(model.model.norm(x))[:, :k_codes].float()
        if samp.cfg:
            logits = logits[p:] + samp.cfg_scale * (logits[:p] - logits[p:])
        if kept_logits is not None:
            kept_logits[:, s] = logits
        tok = sample(logits, gen, samp.temperature, samp.top_k)
        tokens[:, s] = tok.cpu()
        fed = tok if force_tokens is None else force_tokens[:, s].to(tok)
        ids = torch.cat([fed, fed]) if samp.cfg else fed
    return DecodeResult(
        tokens=tokens,
        tas=tas_log,
        replay=rep_log,
        mlp_rel_error=err_log,
        mlp_rows=mlp_rows,
        seconds=time.perf_counter() - t0,
        batch_labels=row_labels,
        logits=kept_logits,
    )


def sample(logits: torch.Tensor, gen: torch.Generator, temperature: float, top_k: int) -> torch.Tensor:
    """Gumbel-max sampling; the noise is drawn whatever the logits, so two runs with the same seed share
    their random stream and differ only where the logits (i.e. replay) make them differ."""
    noise = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp(1e-20, 1 - 1e-7)))
    if temperature <= 0:
        return logits.argmax(-1)
    z = logits / temperature
    if top_k and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = torch.where(z < kth, torch.full_like(z, -math.inf), z)
    return (z + noise.to(z)).argmax(-1)


def teacher_forced_accuracy(
    model: ARVideoTransformer, labels: torch.Tensor, tokens: torch.Tensor
) -> tuple[float, float]:
    """Next-token accuracy on frames 1.. (teacher forcing) vs the copy-previous-frame baseline."""
    n = model.config.tokens_per_frame
    with torch.inference_mode():
        logits = model(model.input_ids(labels, tokens), labels)[:, :, : model.config.codebook_size]
    pred = logits.argmax(-1)
    acc = (pred[:, n:] == tokens[:, n:]).float().mean().item()
    copy = (tokens[:, :-n] == tokens[:, n:]).float().mean().item()
    return acc, copy


def cross_entropy(model: ARVideoTransformer, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(model.input_ids(labels, tokens), labels)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1))
