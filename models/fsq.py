"""A learned video-frame tokenizer: a small convolutional autoencoder with finite scalar quantisation (FSQ).

FSQ (Mentzer et al., 2023): the encoder's latent has one channel per entry of ``levels``; each channel is
bounded with tanh and rounded to one of ``levels[i]`` values (straight-through gradient), and a code is the
mixed-radix number of the rounded values, so ``prod(levels)`` codes and no codebook to collapse. With
``levels = [8, 5, 5, 5]`` that is 1000 codes; a stride-8 encoder turns a 64 x 64 frame into 8 x 8 tokens.

It offers what :mod:`models.capture` uses of :class:`models.tokenizer.PatchVQ`: ``encode(frames)`` (uint8
or float frames, any leading dims) -> int64 codes in raster order, ``decode(codes, grid)`` -> float frames
in [0, 1], and ``size`` (the number of codes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class FSQConfig:
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # one stride-2 stage each
    res_blocks: int = 2  # residual blocks at the latent resolution, in the encoder and in the decoder

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return asdict(self)


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FSQTokenizer(nn.Module):
    """Conv encoder (stride 2 per stage) -> FSQ -> conv decoder (nearest upsampling + conv per stage)."""

    kind = "fsq"

    def __init__(self, config: FSQConfig = FSQConfig()) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        enc: list[nn.Module] = [nn.Conv2d(3, ch[0], 4, stride=2, padding=1)]
        for a, b in zip(ch[:-1], ch[1:], strict=True):
            enc += [nn.GELU(), nn.Conv2d(a, b, 4, stride=2, padding=1)]
        enc += [_Res(ch[-1]) for _ in range(config.res_blocks)]
        enc += [nn.GELU(), nn.Conv2d(ch[-1], len(config.levels), 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(len(config.levels), ch[-1], 3, padding=1)]
        dec += [_Res(ch[-1]) for _ in range(config.res_blocks)]
        for a, b in zip(ch[::-1][:-1], ch[::-1][1:], strict=True):
            dec += [nn.GELU(), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1)]
        dec += [
            nn.GELU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ch[0], ch[0], 3, padding=1),
            nn.GELU(),
            nn.Conv2d(ch[0], 3, 3, padding=1),
        ]
        self.decoder = nn.Sequential(*dec)
        levels = torch.tensor(config.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1, *config.levels[:-1]]), 0)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    # -- FSQ --------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.config.levels)

    @property
    def patch(self) -> int:
        """Pixels per token side (the stride of the encoder)."""
        return self.config.downsample

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> values in (-(L-1)/2, (L-1)/2) (shifted for even L so rounding gives L values)."""
        lv = self.levels[:, None, None]
        half = (lv - 1) * (1 + 1e-3) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> quantised latent in [-1, 1] per channel, straight-through."""
        b = self._bound(z)
        q = b + (torch.round(b) - b).detach()
        return q / (self.levels[:, None, None] // 2)

    def _codes_from_q(self, q: torch.Tensor) -> torch.Tensor:
        half = self.levels[:, None, None] // 2
        digits = torch.round(q * half + half).long()  # (B, D, h, w), 0..L-1
        return (digits * self.basis[:, None, None]).sum(1)

    def _q_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, D, h, w) quantised latent."""
        lv = self.levels.long()
        digits = (codes[:, None] // self.basis[None, :, None, None]) % lv[None, :, None, None]
        half = self.levels[:, None, None] // 2
        return (digits.float() - half) / half

    # -- the tokenizer interface --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training pass: (B, 3, H, W) in [0, 1] -> reconstruction (B, 3, H, W)."""
        return self.decoder(self.quantize(self.encoder(x * 2 - 1))) * 0.5 + 0.5

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(..., H, W, 3) frames (uint8 0..255 or float 0..1) -> (..., H/p * W/p) int64 codes, raster order."""
        x = torch.as_tensor(frames)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        *lead, h, w, _ = x.shape
        flat = x.reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        out = []
        for i in range(0, flat.shape[0], 256):
            q = self.quantize(self.encoder(flat[i : i + 256] * 2 - 1))
            out.append(self._codes_from_q(q).reshape(q.shape[0], -1))
        codes = torch.cat(out) if out else torch.empty(0, (h // self.patch) * (w // self.patch)).long()
        return codes.reshape(*lead, codes.shape[-1])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(..., N) codes -> (..., H, W, 3) float frames in [0, 1]."""
        codes = torch.as_tensor(codes).long().clamp(0, self.size - 1)
        n = codes.shape[-1]
        gh, gw = grid or (int(round(n**0.5)),) * 2
        lead = codes.shape[:-1]
        flat = codes.reshape(-1, gh, gw)
        out = []
        for i in range(0, flat.shape[0], 256):
            x = self.decoder(self._q_from_codes(flat[i : i + 256])) * 0.5 + 0.5
            out.append(x.clamp(0, 1).permute(0, 2, 3, 1))
        p = self.patch
        frames = torch.cat(out) if out else torch.empty(0, gh * p, gw * p, 3)
        return frames.reshape(*lead, gh * p, gw * p, 3)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two float tensors in [0, 1], over all their values."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))
