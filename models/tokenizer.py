"""A patch-codebook VQ tokenizer: each p x p RGB patch becomes the index of its nearest codeword.

Why a patch codebook rather than a VQ-VAE: it trains in seconds on CPU (k-means), decodes exactly to
pixels (codeword lookup), and keeps the property FastCar needs -- an unchanged patch gives the same token.
"""

from __future__ import annotations

import numpy as np
import torch


class PatchVQ:
    """Encode (..., H, W, 3) frames in [0, 1] to (..., H/p * W/p) codes and back."""

    def __init__(self, codebook: torch.Tensor, patch: int) -> None:
        self.codebook = codebook.float()  # (K, p*p*3)
        self.patch = patch

    @property
    def size(self) -> int:
        return self.codebook.shape[0]

    def _patches(self, frames: torch.Tensor) -> torch.Tensor:
        p = self.patch
        *lead, h, w, c = frames.shape
        x = frames.reshape(*lead, h // p, p, w // p, p, c).movedim(-4, -3)  # (..., h/p, w/p, p, p, c)
        return x.reshape(*lead, (h // p) * (w // p), p * p * c)

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames (uint8 0..255 or float 0..1) -> int64 codes, raster order within a frame."""
        x = torch.as_tensor(frames)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        patches = self._patches(x)
        flat = patches.reshape(-1, patches.shape[-1])
        codes = torch.empty(flat.shape[0], dtype=torch.int64)
        cb = self.codebook
        cb_sq = (cb * cb).sum(1)
        for i in range(0, flat.shape[0], 65536):
            chunk = flat[i : i + 65536]
            d = cb_sq[None] - 2 * chunk @ cb.T
            codes[i : i + 65536] = d.argmin(1)
        return codes.reshape(patches.shape[:-1])

    def decode(self, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(..., N) codes -> (..., H, W, 3) float frames in [0, 1]."""
        codes = torch.as_tensor(codes).long()
        n = codes.shape[-1]
        gh, gw = grid or (int(round(n**0.5)),) * 2
        p = self.patch
        x = self.codebook[codes.clamp(0, self.size - 1)]  # (..., N, p*p*3)
        lead = x.shape[:-2]
        x = x.reshape(*lead, gh, gw, p, p, 3).movedim(-3, -4)  # (..., gh, p, gw, p, 3)
        return x.reshape(*lead, gh * p, gw * p, 3).clamp(0, 1)

    @classmethod
    def fit(cls, videos: np.ndarray, patch: int, size: int, seed: int, iters: int = 25) -> PatchVQ:
        """k-means (k-means++ init) over patches of uint8 videos; dead codes are re-seeded."""
        g = torch.Generator().manual_seed(seed)
        tmp = cls(torch.zeros(1, patch * patch * 3), patch)
        x = tmp._patches(torch.as_tensor(videos).float() / 255.0).reshape(-1, patch * patch * 3)
        if x.shape[0] > 200_000:
            x = x[torch.randperm(x.shape[0], generator=g)[:200_000]]
        # k-means++ on a subsample
        sub = x[torch.randperm(x.shape[0], generator=g)[:20_000]]
        centers = [sub[torch.randint(sub.shape[0], (1,), generator=g)].squeeze(0)]
        d2 = ((sub - centers[0]) ** 2).sum(1)
        for _ in range(1, size):
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / len(d2))
            c = sub[torch.multinomial(probs, 1, generator=g)].squeeze(0)
            centers.append(c)
            d2 = torch.minimum(d2, ((sub - c) ** 2).sum(1))
        cb = torch.stack(centers)
        for _ in range(iters):
            vq = cls(cb, patch)
            assign = torch.cat(
                [
                    ((vq.codebook * vq.codebook).sum(1)[None] - 2 * x[i : i + 65536] @ cb.T).argmin(1)
                    for i in range(0, x.shape[0], 65536)
                ]
            )
            sums = torch.zeros_like(cb).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=size).float()
            dead = counts == 0
            cb = torch.where(dead[:, None], cb, sums / counts.clamp(min=1)[:, None])
            if dead.any():
                cb[dead] = x[torch.randint(x.shape[0], (int(dead.sum()),), generator=g)]
        return cls(cb, patch)
