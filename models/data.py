"""Procedural video data: objects moving over static backgrounds, one class per (shape, direction).

Why procedural: the project must train its own model offline on a shared CPU, and FastCar's premise (most
tokens of a frame equal those of the previous frame, a few moving ones do not) has to be present in the
data by construction. The class fixes both the object's look and its motion, so a class-conditioned model
can predict where the object goes next -- the thing that lets it beat copy-the-previous-frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (shape, colour RGB, direction (dy, dx)) per class.
CLASSES: list[tuple[str, tuple[float, float, float], tuple[int, int]]] = [
    ("ball", (0.95, 0.15, 0.15), (0, 1)),
    ("ball", (0.95, 0.15, 0.15), (0, -1)),
    ("square", (0.15, 0.85, 0.2), (1, 0)),
    ("square", (0.15, 0.85, 0.2), (-1, 0)),
    ("triangle", (0.2, 0.35, 1.0), (0, 1)),
    ("triangle", (0.2, 0.35, 1.0), (1, 0)),
    ("cross", (1.0, 0.9, 0.1), (0, -1)),
    ("cross", (1.0, 0.9, 0.1), (-1, 0)),
]
CLASS_NAMES = [
    f"{s}-{ {(0, 1): 'right', (0, -1): 'left', (1, 0): 'down', (-1, 0): 'up'}[d] }" for s, _, d in CLASSES
]

#: Muted background palette, kept apart from the saturated object colours.
PALETTE = np.array(
    [
        [0.55, 0.7, 0.85],
        [0.45, 0.55, 0.7],
        [0.75, 0.75, 0.7],
        [0.35, 0.45, 0.3],
        [0.5, 0.4, 0.3],
        [0.6, 0.55, 0.45],
        [0.3, 0.3, 0.35],
        [0.7, 0.6, 0.65],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class VideoSpec:
    frames: int = 8
    size: int = 32
    object_size: int = 8
    speed: int = 2  # pixels per frame


def _shape_mask(shape: str, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    c = n / 2
    if shape == "ball":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (n / 2) ** 2
    if shape == "square":
        return np.ones((n, n), bool) & (yy > 0.5) & (xx > 0.5) & (yy < n - 0.5) & (xx < n - 0.5)
    if shape == "triangle":
        return np.abs(xx - c) <= yy / 2
    if shape == "cross":
        w = n / 6
        return (np.abs(xx - c) <= w) | (np.abs(yy - c) <= w)
    raise ValueError(shape)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sky/ground split plus 1-3 static blocks; piecewise constant so most patches repeat exactly."""
    img = np.empty((size, size, 3), np.float32)
    sky, ground = rng.choice(len(PALETTE), 2, replace=False)
    horizon = int(rng.integers(size // 3, 3 * size // 4))
    img[:horizon] = PALETTE[sky]
    img[horizon:] = PALETTE[ground]
    for _ in range(int(rng.integers(1, 4))):
        h, w = int(rng.integers(4, 12)), int(rng.integers(3, 10))
        x = int(rng.integers(0, size - w))
        y = max(0, horizon - h + int(rng.integers(-2, 3)))
        img[y : y + h, x : x + w] = PALETTE[int(rng.integers(len(PALETTE)))] * 0.8
    return img


def make_video(label: int, rng: np.random.Generator, spec: VideoSpec = VideoSpec()) -> np.ndarray:
    """One video (frames, size, size, 3) float32 in [0, 1]."""
    shape, colour, (dy, dx) = CLASSES[label]
    n, s, travel = spec.object_size, spec.size, spec.speed * (spec.frames - 1)
    mask = _shape_mask(shape, n)
    bg = background(rng, s)

    def start(d: int) -> int:
        if d > 0:
            return int(rng.integers(0, s - n - travel + 1))
        if d < 0:
            return int(rng.integers(travel, s - n + 1))
        return int(rng.integers(0, s - n + 1))

    y0, x0 = start(dy), start(dx)
    video = np.repeat(bg[None], spec.frames, axis=0)
    col = np.array(colour, np.float32)
    for t in range(spec.frames):
        y, x = y0 + dy * spec.speed * t, x0 + dx * spec.speed * t
        patch = video[t, y : y + n, x : x + n]
        patch[mask] = col
    return video


def make_dataset(count: int, seed: int, spec: VideoSpec = VideoSpec()) -> tuple[np.ndarray, np.ndarray]:
    """(videos uint8 (count, T, H, W, 3), labels (count,)), balanced over classes, deterministic in seed."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    videos = np.empty((count, spec.frames, spec.size, spec.size, 3), np.uint8)
    for i, lab in enumerate(labels):
        videos[i] = np.round(make_video(int(lab), rng, spec) * 255).astype(np.uint8)
    return videos, labels.astype(np.int64)
