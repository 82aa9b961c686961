"""Train the shipped tiny model: procedural videos -> patch-VQ tokenizer -> class-conditioned AR transformer.

Reproducible (seeded, single-threaded by default so CPU kernels are deterministic) and sized to finish in
about 20 minutes on half of this 2-core machine::

    python -m models.train --out models/checkpoints    # what made the shipped files; default runs/tiny_model

Writes ``fastcar_tiny.safetensors`` (HF Llama keys + config), ``fastcar_tiny_tokenizer.safetensors`` and
``fastcar_tiny_train_log.json`` (loss curve, held-out accuracy vs copy-previous-frame, timings).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import save_hf_llama, save_tokenizer, tokenizer_path
from models.data import CLASSES, VideoSpec, make_dataset
from models.fastcar import cross_entropy, teacher_forced_accuracy
from models.tokenizer import PatchVQ
from models.transformer import ARConfig, ARVideoTransformer, tiny_dims


def tokenize_dataset(vq: PatchVQ, videos: np.ndarray) -> torch.Tensor:
    """(count, T, H, W, 3) uint8 -> (count, T*N) codes."""
    codes = vq.encode(videos)  # (count, T, N)
    return codes.reshape(codes.shape[0], -1)


def fit(
    model: ARVideoTransformer,
    labels: torch.Tensor,
    tokens: torch.Tensor,
    val_labels: torch.Tensor,
    val_tokens: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    label_drop: float,
    eval_every: int,
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The training loop both shipped models use: AdamW with 5% warm-up and cosine decay, random batches,
    class labels dropped for CFG, gradient clipping at 1; the held-out loss every ``eval_every`` steps.
    Returns the train and held-out curves."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    curve: list[tuple[int, float]] = []
    val_curve: list[tuple[int, float]] = []
    t1 = time.time()
    model.train()
    for step in range(steps):
        idx = torch.randint(len(tokens), (batch,), generator=generator)
        batch_labels = labels[idx].clone()
        drop = torch.rand(batch, generator=generator) < label_drop
        batch_labels[drop] = -1
        loss = cross_entropy(model, batch_labels, tokens[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        curve.append((step, float(loss.detach())))
        if step % eval_every == 0 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                vl = float(cross_entropy(model, val_labels, val_tokens))
            model.train()
            val_curve.append((step, vl))
            print(f"step {step} loss {curve[-1][1]:.4f} val {vl:.4f} {time.time() - t1:.0f}s", flush=True)
    model.eval()
    return curve, val_curve


def train(
    out: Path,
    *,
    seed: int = 0,
    steps: int = 1700,
    batch: int = 8,
    lr: float = 2e-3,
    train_videos: int = 16000,
    val_videos: int = 512,
    codebook: int = 512,
    threads: int = 1,
    label_drop: float = 0.1,
) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec()
    t0 = time.time()
    train_v, train_l = make_dataset(train_videos, seed=seed * 1000 + 1, spec=spec)
    val_v, val_l = make_dataset(val_videos, seed=seed * 1000 + 2, spec=spec)
    vq = PatchVQ.fit(train_v[:2000], patch=4, size=codebook, seed=seed)
    train_t, val_t = tokenize_dataset(vq, train_v), tokenize_dataset(vq, val_v)
    rec = vq.decode(val_t.reshape(val_videos, spec.frames, -1))
    mse = ((rec - torch.as_tensor(val_v).float() / 255) ** 2).mean().item()
    tok_psnr = 10 * math.log10(1 / mse)
    t_data = time.time() - t0
    print(f"data + tokenizer: {t_data:.1f}s, tokenizer PSNR {tok_psnr:.2f} dB", flush=True)

    n = (spec.size // 4) ** 2
    dims = tiny_dims(vocab=codebook + len(CLASSES) + 1)
    cfg = ARConfig(dims, codebook, len(CLASSES), frames=spec.frames, tokens_per_frame=n, class_embedding=True)
    model = ARVideoTransformer(cfg)
    gen = torch.Generator().manual_seed(seed)
    t1 = time.time()
    curve, val_curve = fit(
        model,
        torch.as_tensor(train_l),
        train_t,
        torch.as_tensor(val_l[:64]),
        val_t[:64],
        steps=steps,
        batch=batch,
        lr=lr,
        generator=gen,
        label_drop=label_drop,
        eval_every=50,
    )
    t_train = time.time() - t1
    accs = [
        teacher_forced_accuracy(model, torch.as_tensor(val_l[i : i + 64]), val_t[i : i + 64])
        for i in range(0, val_videos, 64)
    ]
    acc, copy = float(np.mean([a for a, _ in accs])), float(np.mean([c for _, c in accs]))
    with torch.no_grad():
        val_loss = float(
            np.mean(
                [
                    float(cross_entropy(model, torch.as_tensor(val_l[i : i + 64]), val_t[i : i + 64]))
                    for i in range(0, val_videos, 64)
                ]
            )
        )
    info = {
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "train_videos": train_videos,
        "val_videos": val_videos,
        "threads": threads,
        "params": model.num_parameters(),
        "tokenizer_psnr_db": tok_psnr,
        "final_train_loss": float(np.mean([c[1] for c in curve[-20:]])),
        "val_loss": val_loss,
        "val_next_frame_token_accuracy": acc,
        "val_copy_previous_frame_accuracy": copy,
        "seconds_data": t_data,
        "seconds_train": t_train,
    }
    print(json.dumps(info, indent=1), flush=True)
    ckpt = out / "fastcar_tiny.safetensors"
    save_hf_llama(model, ckpt, {"fastcar.info": json.dumps(info)})
    save_tokenizer(vq, tokenizer_path(ckpt))
    log = dict(info, curve=curve, val_curve=val_curve)
    (out / "fastcar_tiny_train_log.json").write_text(json.dumps(log))
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("runs/tiny_model"),
        help="output directory (default runs/tiny_model; models/checkpoints holds the shipped files)",
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the data, the codebook and the model (default 0)"
    )
    ap.add_argument("--steps", type=int, default=1700, help="training steps (default 1700)")
    ap.add_argument("--batch", type=int, default=8, help="videos per step (default 8)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine decay (default 2e-3)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 keeps CPU kernels deterministic (default 1)"
    )
    a = ap.parse_args(argv)
    train(a.out, seed=a.seed, steps=a.steps, batch=a.batch, lr=a.lr, threads=a.threads)


if __name__ == "__main__":
    main()
