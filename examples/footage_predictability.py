"""How predictable is the next frame's token on held-out footage, beyond copying the previous frame?

The footage model (docs/model_card_footage.md) does not beat copy-previous-frame in token accuracy. This
script asks whether anything simple does, on the same 384 held-out videos its card reports
(``make_footage(384, 3, "heldout")``, the shipped FSQ tokenizer):

- ``copy``: the previous frame's token at the same place;
- ``transition``: the most frequent next token given the previous frame's token (counted on training
  videos);
- ``transition2``: the same given the tokens of the two previous frames (frames 2.. only);
- ``motion``: the previous frame's token shifted by the one of 9 shifts (-1..1 tokens in y and x) that best
  explains the current frame's tokens decoded so far (raster order, as the model sees them), when it
  explains them (16 or more seen) at least 10 points better than no shift;
- ``model``: the shipped checkpoint's teacher-forced argmax (as ``--eval-only`` measures it).

Likelihood (nats per token, lower is better) puts the predictors that are distributions beside the model:
``copy`` as the previous token with probability ``a`` and the other codes uniformly, ``a`` its accuracy on
these very videos, and ``transition`` as the counted next-token distribution given the previous token,
add-lambda smoothed toward the training frequencies, lambda the best of a small grid on these very videos.
Both baselines are tuned in hindsight on the held-out videos, so they are favoured, not the model.

Accuracy counts frames 1..7 (``transition2``: 2..7, with copy on the same frames beside it).
``--dead-band D`` encodes every video with hysteresis instead: a latent channel keeps the previous frame's
level while it stays within 0.5 + D levels of it (a codec's "skip"), which removes most quantisation
flicker at a small cost in reconstruction (reported as ``reconstruction_psnr_db``); the model, trained on
plain codes, is then left out::

    python examples/footage_predictability.py [--train-videos 4000] [--dead-band 0.2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import CHECKPOINT_DIR, load_checkpoint
from models.footage import make_footage
from models.fsq import FSQTokenizer
from models.train_footage import NAME, copy_nll

SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def most_frequent_next(keys: np.ndarray, nxt: np.ndarray) -> dict:
    """key -> the next token seen most often after it (ties: the smallest token)."""
    order = np.lexsort((nxt, keys))
    k, v = keys[order], nxt[order]
    pair_start = np.r_[True, (k[1:] != k[:-1]) | (v[1:] != v[:-1])]
    pk, pv = k[pair_start], v[pair_start]
    counts = np.diff(np.r_[np.flatnonzero(pair_start), len(k)])
    best: dict = {}
    for key, val, c in zip(pk.tolist(), pv.tolist(), counts.tolist(), strict=True):
        if key not in best or c > best[key][1]:
            best[key] = (val, c)
    return {key: val for key, (val, _) in best.items()}


def transition_nll(
    train_prev, train_next, prev, truth, codes: int, lambdas=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
):
    """Best (nats per token, lambda) of the counted P(next | previous token), add-lambda smoothed toward the
    training frequencies, over ``lambdas``."""
    counts = np.zeros((codes, codes))
    np.add.at(counts, (train_prev, train_next), 1)
    prior = (np.bincount(train_next, minlength=codes) + 1.0) / (len(train_next) + codes)
    rows = counts.sum(1, keepdims=True)
    return min(
        (float(-np.log(((counts + lam * codes * prior) / (rows + lam * codes))[prev, truth]).mean()), lam)
        for lam in lambdas
    )


def motion_copy(videos: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """(V, T, h, w) tokens -> (V, T-1, h, w) motion-compensated copies of frames 0..T-2."""
    v, t, h, w = videos.shape
    prev, cur = videos[:, :-1], videos[:, 1:]
    match = np.zeros((len(SHIFTS), v, t - 1, h * w))
    valid = np.zeros((len(SHIFTS), h * w))
    shifted = np.zeros((len(SHIFTS), v, t - 1, h, w), dtype=videos.dtype)
    ys, xs = np.divmod(np.arange(h * w), w)
    for i, (dy, dx) in enumerate(SHIFTS):
        py, px = ys - dy, xs - dx
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        src = np.where(ok, py * w + px, ys * w + xs)  # out of the frame: no shift
        shifted[i] = prev.reshape(v, t - 1, -1)[..., src].reshape(v, t - 1, h, w)
        match[i] = (cur.reshape(v, t - 1, -1) == shifted[i].reshape(v, t - 1, -1)) & ok
        valid[i] = ok
    # match rate of each shift over the tokens decoded before each position
    before = np.cumsum(match, axis=-1) - match
    seen = np.cumsum(valid, axis=-1) - valid
    rate = np.where(seen[:, None, None] >= 16, before / np.maximum(seen[:, None, None], 1), -1.0)
    still = SHIFTS.index((0, 0))
    best = rate.argmax(axis=0)
    use = np.take_along_axis(rate, best[None], 0)[0] > rate[still] + margin
    choice = np.where(use, best, still).reshape(v, t - 1, h, w)
    return np.take_along_axis(shifted, choice[None], 0)[0]


@torch.no_grad()
def encode_dead_band(tok: FSQTokenizer, videos: np.ndarray, band: float) -> tuple[np.ndarray, float]:
    """(V, T, H, W, 3) uint8 -> (V, T, N) codes with hysteresis ``band`` (0: the plain encoding), and the
    mean squared error of the decoded codes against the videos."""
    x = torch.as_tensor(videos).float() / 255
    v, t, h, w, _ = x.shape
    lat = tok._bound(tok.encoder(x.reshape(-1, h, w, 3).permute(0, 3, 1, 2) * 2 - 1))
    lat = lat.reshape(v, t, *lat.shape[1:])
    level = torch.round(lat)
    for f in range(1, t):
        keep = (lat[:, f] - level[:, f - 1]).abs() < 0.5 + band
        level[:, f] = torch.where(keep, level[:, f - 1], level[:, f])
    q = (level / (tok.levels[:, None, None] // 2)).reshape(-1, *lat.shape[2:])
    rec = (tok.decoder(q) * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).reshape(x.shape)
    return tok._codes_from_q(q).reshape(v, t, -1).numpy(), float(((rec - x) ** 2).mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--train-videos", type=int, default=4000, help="training videos the tables count (default 4000)"
    )
    ap.add_argument(
        "--dead-band", type=float, default=0.0, help="hysteresis of the encoding, in levels (default 0: none)"
    )
    ap.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok, _ = load_checkpoint(CHECKPOINT_DIR / f"{NAME}.safetensors")
    cfg = model.config
    t, n = cfg.frames, cfg.tokens_per_frame
    g = int(round(n**0.5))
    train_v, _ = make_footage(a.train_videos, 1, "train")
    held_v, held_l = make_footage(384, 3, "heldout")
    train = np.concatenate([encode_dead_band(tok, c, a.dead_band)[0] for c in np.array_split(train_v, 40)])
    parts = [encode_dead_band(tok, c, a.dead_band) for c in np.array_split(held_v, 8)]  # 48 videos each
    held = np.concatenate([p[0] for p in parts])
    psnr = float(10 * np.log10(1 / np.mean([p[1] for p in parts])))

    truth, prev = held[:, 1:], held[:, :-1]
    one = most_frequent_next(train[:, :-1].ravel(), train[:, 1:].ravel())
    transition = np.vectorize(lambda k: one.get(int(k), int(k)))(prev)
    k2 = lambda x: x[:, 1:-1].astype(np.int64) * tok.size + x[:, :-2]  # noqa: E731
    two = most_frequent_next(k2(train).ravel(), train[:, 2:].ravel())
    keys2 = k2(held)
    transition2 = np.vectorize(lambda k, p: two.get(int(k), int(p)))(keys2, held[:, 1:-1])
    motion = motion_copy(held.reshape(-1, t, g, g)).reshape(truth.shape)
    pred, nll = [], []
    with torch.no_grad():
        codes = torch.as_tensor(held.reshape(len(held), -1))
        for i in range(0, len(codes) if a.dead_band == 0 else 0, 16):  # the model knows plain codes only
            lab = torch.as_tensor(held_l[i : i + 16])
            logits = model(model.input_ids(lab, codes[i : i + 16]), lab)[:, :, : cfg.codebook_size]
            pred.append(logits.argmax(-1).numpy())
            logp = torch.log_softmax(logits.float(), -1).reshape(-1, t, n, cfg.codebook_size)[:, 1:]
            y = codes[i : i + 16].reshape(-1, t, n)[:, 1:, :, None]
            nll.append(-logp.gather(-1, y).numpy().ravel())

    acc = lambda p, y: float((p == y).mean())  # noqa: E731
    t_nll, t_lam = transition_nll(
        train[:, :-1].ravel(), train[:, 1:].ravel(), prev.ravel(), truth.ravel(), tok.size
    )
    out = {
        "videos": len(held),
        "train_videos": a.train_videos,
        "dead_band": a.dead_band,
        "reconstruction_psnr_db": psnr,
        "copy": acc(prev, truth),
        "transition": acc(transition, truth),
        "motion": acc(motion, truth),
        "model": acc(np.concatenate(pred).reshape(-1, t, n)[:, 1:], truth) if pred else None,
        "copy_frames_2_on": acc(held[:, 1:-1], held[:, 2:]),
        "transition2_frames_2_on": acc(transition2, held[:, 2:]),
        "copy_nll_nats": copy_nll(acc(prev, truth), tok.size),
        "transition_nll_nats": t_nll,
        "transition_lambda": t_lam,
        "model_nll_nats": float(np.concatenate(nll).mean()) if nll else None,
        "transition_keys_seen": len(one),
        "transition2_keys_seen": len(two),
    }
    for key, value in out.items():
        percent = isinstance(value, float) and key not in (
            "dead_band",
            "reconstruction_psnr_db",
            "transition_lambda",
        )
        percent = percent and not key.endswith("_nats")
        print(f"{key:>24}: {value:.4%}" if percent else f"{key:>24}: {value}")
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
