"""Label maps as images (issue 12, first part): a source map of the photo and a target map of
what the edit should show, painted in flat colours (one colour per label, as GIMP's pencil
paints) or given as grey label indices.

`read_label_maps(source, target)` turns two RGB (or grey) arrays into label index maps that
share one palette: the source map's colours define the labels; anti-aliased pixels at label
boundaries snap to the nearest label colour; a target colour that the source map does not have
is an error naming it, with its pixel count and a position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magic_protocol.protocol import MAX_LABELS

# A colour is a label when the inside of its flat regions (pixels whose 3x3 neighbourhood is
# all that colour) covers at least this share of the source map; other colours are
# anti-aliasing or stray pixels and snap to the nearest label.
MIN_LABEL_SHARE = 0.001
# A target pixel further than this from every label colour (RGB distance) was painted with a
# colour the source map does not have...
SNAP_DISTANCE = 60.0
BLEND_DISTANCE = 12.0  # ...unless it lies this close to the line between two label colours


class LabelMapError(ValueError):
    """A label map the edit cannot use. The message is for the user."""


@dataclass(frozen=True)
class LabelMaps:
    source: np.ndarray  # (H, W) uint8 label indices of the photo
    target: np.ndarray  # (H, W) uint8 label indices of what the edit should show
    palette: np.ndarray  # (K, 3) uint8: label k's colour (grey maps: k, k, k)

    @property
    def count(self) -> int:
        return len(self.palette)


def _as_rgb(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=-1)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return a[..., :3]
    raise LabelMapError(f"the {name} label map must be an RGB or grey image")


def _interior(image: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood has their colour only: inside a flat region, never an
    anti-aliased boundary pixel."""
    h, w = image.shape[:2]
    p = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    same = np.ones((h, w), bool)
    for dy in range(3):
        for dx in range(3):
            same &= np.all(p[dy:dy + h, dx:dx + w] == image, axis=-1)
    return same


def _palette(source: np.ndarray) -> np.ndarray:
    inside = source[_interior(source)]
    if inside.size == 0:
        raise LabelMapError("the source label map has no flat region: paint labels with flat "
                            "colours (the pencil tool, no anti-aliasing)")
    colours, counts = np.unique(inside.reshape(-1, 3), axis=0, return_counts=True)
    keep = counts >= max(1, MIN_LABEL_SHARE * source.shape[0] * source.shape[1])
    palette = colours[keep][np.argsort(-counts[keep], kind="stable")]
    if len(palette) > MAX_LABELS:
        raise LabelMapError(f"the source label map has {len(palette)} flat colours; at most "
                            f"{MAX_LABELS} labels are supported (paint with fewer colours)")
    if len(palette) < 2:
        raise LabelMapError("the source label map has a single colour: it needs at least two "
                            "labels (an object and its background)")
    return palette


def _nearest(image: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette colour and the distance to it, per pixel (in row blocks,
    so a 12 MP map needs tens of MB, not GB)."""
    index = np.empty(image.shape[:2], np.uint8)
    distance = np.empty(image.shape[:2], np.float32)
    colours = palette[None, None].astype(np.float32)
    for top in range(0, image.shape[0], 256):
        block = image[top:top + 256, :, None, :].astype(np.float32)
        d = np.sqrt(((block - colours) ** 2).sum(-1))
        index[top:top + 256] = d.argmin(-1)
        distance[top:top + 256] = d.min(-1)
    return index, distance


def _blends(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Which pixels (M, 3) lie on the line between two label colours: anti-aliasing between two
    labels, not a colour of its own."""
    p = pixels.astype(np.float32)
    c = palette.astype(np.float32)
    best = np.full(len(p), np.inf, np.float32)
    for i in range(len(c)):
        for j in range(i + 1, len(c)):
            d = c[j] - c[i]
            t = np.clip(((p - c[i]) @ d) / max(float(d @ d), 1e-6), 0, 1)
            best = np.minimum(best, np.linalg.norm(p - (c[i] + t[:, None] * d), axis=1))
    return best <= BLEND_DISTANCE


def _is_grey_indices(a: np.ndarray) -> bool:
    return a.ndim == 2 and int(a.max()) < MAX_LABELS


def read_label_maps(source: np.ndarray, target: np.ndarray) -> LabelMaps:
    """Label index maps of the photo (`source`) and of the wanted result (`target`)."""
    if source.shape[:2] != target.shape[:2]:
        raise LabelMapError(f"the target label map is {target.shape[1]}x{target.shape[0]}, "
                            f"the source label map {source.shape[1]}x{source.shape[0]}: they "
                            "must have the photo's size")
    if _is_grey_indices(source) and _is_grey_indices(target):
        count = int(max(source.max(), target.max())) + 1
        missing = sorted(set(np.unique(target).tolist()) - set(np.unique(source).tolist()))
        if missing:
            k = missing[0]
            ys, xs = np.nonzero(target == k)
            raise LabelMapError(f"label {k} of the target map does not occur in the source map "
                                f"({len(ys)} pixels, e.g. at x={xs[0]}, y={ys[0]})")
        grey = np.arange(count, dtype=np.uint8)
        return LabelMaps(source.astype(np.uint8), target.astype(np.uint8),
                         np.stack([grey] * 3, axis=-1))
    src, tgt = _as_rgb(source, "source"), _as_rgb(target, "target")
    palette = _palette(src)
    source_labels, _ = _nearest(src, palette)
    target_labels, distance = _nearest(tgt, palette)
    foreign = distance > SNAP_DISTANCE
    if foreign.any():
        foreign[foreign] = ~_blends(tgt[foreign], palette)
    if foreign.any():
        colours, counts = np.unique(tgt[foreign], axis=0, return_counts=True)
        worst = colours[counts.argmax()]
        ys, xs = np.nonzero(np.all(tgt == worst, axis=-1))
        hex_colour = "#" + "".join(f"{int(c):02x}" for c in worst)
        raise LabelMapError(f"the target label map uses {hex_colour}, which is not a label "
                            f"colour of the source map ({counts.max()} pixels, e.g. at "
                            f"x={xs[0]}, y={ys[0]}); paint with the source map's colours")
    return LabelMaps(source_labels, target_labels, palette)
