"""Synthetic scenes for engine tests: a textured red disk on a textured green field."""

from __future__ import annotations

import numpy as np


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def red_disk_scene(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, source mask, guide mask): the disk sits at 30% width; the guide moves it to 70%."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.uint8)
    img[..., 0] = 40 + rng.integers(0, 30, (size, size))
    img[..., 1] = 120 + rng.integers(0, 40, (size, size))
    img[..., 2] = 60 + rng.integers(0, 30, (size, size))
    r = size * 0.18
    source = disk(size, size, size / 2, size * 0.3, r)
    guide = disk(size, size, size / 2, size * 0.7, r)
    obj = np.stack([200 + rng.integers(0, 30, (size, size)), 30 + rng.integers(0, 30, (size, size)),
                    30 + rng.integers(0, 30, (size, size))], axis=-1)
    img[source] = obj[source]
    return img, source, guide


def red_pixels(image: np.ndarray) -> np.ndarray:
    """An independent judge of where the object is: colour thresholding of the 3x3-smoothed
    image (so single speckles do not count), no network involved."""
    diff = image[..., 0].astype(float) - image[..., 1].astype(float)
    padded = np.pad(diff, 1, mode="edge")
    h, w = diff.shape
    smooth = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9
    return smooth > 60


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def noise_move_scene(h: int, w: int, rows: slice, cols: slice, shift: int, *, seed: int,
                     high: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo of uniform noise (levels below `high`), a rectangular object at (rows, cols)
    and its guide `shift` px to the right."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, high, (h, w, 3), dtype=np.uint8)
    source = np.zeros((h, w), bool)
    source[rows, cols] = True
    return img, source, np.roll(source, shift, axis=1)
