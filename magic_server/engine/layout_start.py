"""A layout edit's starting composite, made the way an artist would cut and paste.

Started from a smooth fill, the patch term grows a moved region anew from its coarse outline
and keeps little of what it was (a coin of coin parts). An artist moves it: cuts the region,
pastes it where the target map wants it. Here every region that gains a label is given the
photo's pixels of the place of that label whose shape fits it best (found by cross-correlating
the region's outline with the label's mask), and the synthesis starts from that composite as
from an artist's own: the pasted inside is kept, its rim, the seams and the uncovered old
places are synthesized. A region no place fits (a concept painted in a new shape) keeps the
smooth-fill start.
"""

from __future__ import annotations

import numpy as np

from magic_server.engine.components import connected_regions

SEARCH_SIDE = 320  # the outline search runs on a copy whose longer side is at most this
MIN_FIT = 0.75  # share of the region the place pasted from must cover with the region's label
MIN_REGION_PX = 64
# A region is moved only when it fits elsewhere by this much better than where it is: a label
# grown into its neighbour fits best (nearly) where it already is and is left alone.
MOVE_MARGIN = 0.2
# A region that keeps its label but not its shape (IoU with the photo's region under it at
# most RESHAPED) is moved from a place where it fits a whole region of the photo this well.
RESHAPED = 0.6
WHOLE_FIT = 0.9


def block_share(mask: np.ndarray, factor: int) -> np.ndarray:
    """Share of each factor x factor block that is inside the mask."""
    if factor == 1:
        return mask.astype(np.float32)
    h, w = mask.shape
    hh, ww = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.zeros((hh, ww), np.float32)
    padded[:h, :w] = mask
    return padded.reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))


def _best_offset(region: np.ndarray, label: np.ndarray) -> tuple[int, int]:
    """(dy, dx) maximising the correlation of the region's outline (+1 inside, -1 in its box
    outside) with the label's mask shifted by it: the photo's place where that label has the
    region's shape. Whole-image FFTs on the small copies."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    template = np.where(region[top:bottom, left:right], 1.0, -1.0)
    th, tw = template.shape
    shape = (h + th, w + tw)
    score = np.fft.irfft2(np.fft.rfft2(label, shape) * np.conj(np.fft.rfft2(template, shape)),
                          shape)
    # score[y, x]: the template's top-left corner laid at (y, x) of the label mask
    valid = score[: h - th + 1, : w - tw + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y - top), int(x - left)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _regions_under(regions: np.ndarray, labels: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                   k: int) -> np.ndarray:
    """The whole regions of label k (of `regions`, the map's regions) under the pixels."""
    ids = np.unique(regions[ys, xs][labels[ys, xs] == k])
    return np.isin(regions, ids) & (labels == k)


def layout_composite(image: np.ndarray, source: np.ndarray, target: np.ndarray
                     ) -> np.ndarray | None:
    """The photo with each region of the target map that was moved pasted over, whole, from
    the best-fitting place of its label (uint8 HxWx3), or None when no region was moved.

    A target region next to a change counts as moved when it fits elsewhere clearly better
    than where it is (a region gaining its label), or when it has become another shape than
    the photo's region under it and the place it fits is a whole region of that shape (the
    small coin of a swap, inside the big coin's old place). A region that fits best where it
    already is (a label grown into its neighbour, a removal's background) is left to the
    synthesis."""
    h, w = source.shape
    factor = max(1, -(-max(h, w) // SEARCH_SIDE))
    out = image.copy()
    pasted = False
    gained = target != source
    regions, _ = connected_regions(target)
    photo_regions, _ = connected_regions(source)
    near = np.zeros_like(gained)
    near[1:] |= gained[:-1]
    near[:-1] |= gained[1:]
    near[:, 1:] |= gained[:, :-1]
    near[:, :-1] |= gained[:, 1:]
    for r in np.unique(regions[near | gained]).tolist():
        region = regions == r
        k = int(target[region][0])
        if region.sum() < MIN_REGION_PX:
            continue
        small = block_share(region, factor) > 0.5
        if not small.any():
            continue
        dy, dx = _best_offset(small, block_share(source == k, factor))
        dy, dx = dy * factor, dx * factor
        ys, xs = np.nonzero(region)
        sy, sx = ys + dy, xs + dx
        inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        fits = np.zeros(len(ys), bool)
        fits[inside] = source[sy[inside], sx[inside]] == k
        stays = float((source[ys, xs] == k).mean())  # how well it fits where it is
        moved = fits.mean() >= max(MIN_FIT, stays + MOVE_MARGIN)
        if not moved and fits.mean() >= WHOLE_FIT and inside.all():
            own = _regions_under(photo_regions, source, ys, xs, k)
            there = _regions_under(photo_regions, source, sy, sx, k)
            shifted = np.zeros_like(region)
            shifted[sy, sx] = True
            moved = _iou(region, own) <= RESHAPED and _iou(shifted, there) >= WHOLE_FIT
        if not moved:
            continue
        out[ys[inside], xs[inside]] = image[sy[inside], sx[inside]]
        pasted = True
    return out if pasted else None
