"""A masks-only move, copy or reshape starts from the object itself, put where the guide says.

Given only the two masks, the synthesis used to grow the object anew at its new place from the
photo's patches, and where the guide overlapped the old place, the old pixels stayed: half of a
cup's rim came back as saucer. An artist moving the object by hand pastes its own pixels there.
This does the same: each connected part of the guide is matched with the part of the source it
shows (by area and shape), the similarity (move, copy) or axis-aligned scaling (reshape) that
takes that source part onto it is found from their extents and refined by an overlap search,
and the object's pixels are warped there. What that leaves unexplained (one selection holding
a cup that stays and a spoon that moves or is copied) is found as a shape within the source
(_locate) and carried at its own size. The synthesis then starts from that composite exactly
as from a layer the artist moved in GIMP: the inside is kept, the rim, the seams and the old
place are synthesized, so both entries reach the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from magic_server.engine.api import EditKind
from magic_server.engine.components import connected_regions
from magic_server.engine.layout_start import block_share
from magic_server.engine.regions import Box, bounding_box, dilate

SEARCH_SIDE = 384  # components are found on a copy whose longer side is at most this
MIN_PART_PX = 16  # parts smaller than this (on that copy) are specks, not object parts
MIN_IOU = 0.6  # a transform that overlaps its guide part less than this explains nothing
REFINE_STEPS = (8, 4, 2, 1)  # the overlap search's strides, in pixels of the small copy
SAME_SIZE = 0.02  # guide and source parts whose areas differ less than this: same size
WHOLE_FIT = 0.95  # a fit overlapping its guide part this much explains all of it
OVERLAP_PAIR = 0.3  # a guide part overlapping a source part this much (IoU) is that part
KEPT_SHARE = 0.9  # a source part this much inside its guide part stays where it is
PIECE_CANDIDATES = 5  # source parts fitted to each piece a fit leaves unexplained
REST_SHARE = 0.02  # pieces it leaves unexplained from this share of the part are fitted too
LOCATE_RING = 3  # px (small copy) round a piece where the source must not go on (_locate)


@dataclass(frozen=True)
class Transform:
    """Guide pixel p comes from source pixel (p - to) / scale + frm (y, x order)."""

    frm: tuple[float, float]
    to: tuple[float, float]
    scale: tuple[float, float]

    def source_of(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((ys - self.to[0]) / self.scale[0] + self.frm[0],
                (xs - self.to[1]) / self.scale[1] + self.frm[1])


def _parts(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's connected parts (bool masks of its size), largest first, specks left out."""
    regions, count = connected_regions(mask.astype(np.int8))
    parts = []
    for r in range(count):
        part = regions == r
        if mask[part].all() and part.sum() >= MIN_PART_PX:
            parts.append(part)
    return sorted(parts, key=lambda p: -int(p.sum()))


def _extent(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre (y, x), size (h, w)) of a mask from its pixels' mean and spread."""
    ys, xs = np.nonzero(mask)
    centre = np.array([ys.mean(), xs.mean()])
    size = np.array([ys.std(), xs.std()]) * np.sqrt(12) + 1
    return centre, size


def _warp_mask(source: np.ndarray, t: Transform, shape: tuple[int, int]) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    sy, sx = t.source_of(ys.astype(np.float64), xs.astype(np.float64))
    iy, ix = np.rint(sy).astype(int), np.rint(sx).astype(int)
    ok = (iy >= 0) & (iy < source.shape[0]) & (ix >= 0) & (ix < source.shape[1])
    out = np.zeros(shape, bool)
    out[ok] = source[iy[ok], ix[ok]]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _fit(source: np.ndarray, guide: np.ndarray, reshape: bool) -> tuple[Transform, float]:
    """The transform taking the source part onto the guide part, and its overlap (IoU)."""
    cs, ss = _extent(source)
    cg, sg = _extent(guide)
    if reshape:
        scale = sg / ss
    else:
        s = float(np.sqrt(guide.sum() / max(1, source.sum())))
        if abs(s - 1) < SAME_SIZE:  # a move keeps the size
            s = 1.0
        scale = np.array([s, s])
    frm, scale = tuple(cs), tuple(scale)

    def overlap(to: tuple[float, float]) -> float:
        return _iou(_warp_mask(source, Transform(frm, to, scale), guide.shape), guide)

    to, score = _climb(tuple(cg), overlap, REFINE_STEPS, min_gain=1e-9)
    return Transform(frm, to, scale), score


def _climb(start: tuple, score_of, steps, min_gain: float = 0.0) -> tuple[tuple, float]:
    """Hill-climb an offset (y, x) from `start` while `score_of` grows by more than
    `min_gain`: at each of `steps` (strides, largest first), moves of one stride along
    either axis. Returns the offset and its score."""
    best, score = start, score_of(start)
    for step in steps:
        improved = True
        while improved:
            improved = False
            for dy, dx in ((step, 0), (-step, 0), (0, step), (0, -step)):
                candidate = (best[0] + dy, best[1] + dx)
                s = score_of(candidate)
                if s > score + min_gain:
                    best, score, improved = candidate, s, True
    return best, score


def _signature(part: np.ndarray) -> np.ndarray:
    """A part's log area and log aspect: what matches a guide part with a source part."""
    _, size = _extent(part)
    return np.array([np.log(part.sum()), np.log(size[0] / size[1])])


def _boxes_meet(a: Box, b: Box) -> bool:
    return a.top < b.bottom and b.top < a.bottom and a.left < b.right and b.left < a.right


def _pairs(source_parts: list[np.ndarray], guide_parts: list[np.ndarray]
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each guide part with the unused source part most like it in area and aspect."""
    left = list(range(len(source_parts)))
    pairs = []
    # a guide part lying mostly on one source part is that part, moved a little or reshaped
    # in place (the enlarged one of two eyes; a stretched rocket's boosters): paired first
    overlapping: dict[int, int] = {}
    boxes = [bounding_box(p) for p in source_parts]
    for gi, g in enumerate(guide_parts):
        gb = bounding_box(g)  # parts whose boxes do not meet overlap by nothing
        ious = [_iou(source_parts[i], g) if _boxes_meet(boxes[i], gb) else 0.0 for i in left]
        if ious and max(ious) >= OVERLAP_PAIR:
            best = left[int(np.argmax(ious))]
            if best not in overlapping.values():
                overlapping[gi] = best
    if len(source_parts) > 1:
        left = [i for i in left if i not in overlapping.values()]
    for gi, g in enumerate(guide_parts):
        if gi in overlapping:
            pairs.append((source_parts[overlapping[gi]], g))
            continue
        if not left:
            left = list(range(len(source_parts)))  # a copy: one source part, several places
        sig = _signature(g)
        best = min(left, key=lambda i: float(np.abs(_signature(source_parts[i]) - sig).sum()))
        if len(source_parts) > 1:
            left.remove(best)
        pairs.append((source_parts[best], g))
    return pairs


def _full_size(part: np.ndarray, factor: int, shape: tuple[int, int], grow: bool = True
               ) -> np.ndarray:
    """The part of the small copy (blocks of `factor` px) at full size (bool HxW), grown by
    one block unless `grow` is False."""
    if grow and factor > 1:
        grown = part.copy()
        grown[1:] |= part[:-1]
        grown[:-1] |= part[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        part = grown
    return np.repeat(np.repeat(part, factor, 0), factor, 1)[: shape[0], : shape[1]]


def _inverse(t: Transform) -> Transform:
    """The transform taking guide positions back: inverse(t).source_of(q) is where source
    pixel q lands under t."""
    return Transform(t.to, t.frm, (1 / t.scale[0], 1 / t.scale[1]))


def _moves(s_part: np.ndarray, g_part: np.ndarray, reshape: bool,
           source_parts: list[np.ndarray] | None = None, copy: bool = False
           ) -> list[tuple[np.ndarray, np.ndarray, Transform]]:
    """(source part, guide part, transform) for one matched pair: the transform that best
    takes the source part onto the guide part and, where that leaves a sizeable piece of each
    unexplained (one selection holding a cup that stays and a spoon that moves), those pieces
    matched and fitted in turn. copy: the original stays where it is when the guide part
    holds it, and what the guide adds is the copy (fitting the whole part to the guide
    scaled it to the larger area and grew a copied spoon from nothing)."""
    kept = (s_part & g_part).sum() >= KEPT_SHARE * s_part.sum()
    t, score = (None, 0.0) if copy and kept else _fit(s_part, g_part, reshape)
    if score >= MIN_IOU:
        found = [(s_part, g_part, t)]
        if score >= WHOLE_FIT:
            return found
        g_rest = g_part & ~_warp_mask(s_part, t, g_part.shape)
        s_rest = s_part & ~_warp_mask(g_part, _inverse(t), s_part.shape)
    elif kept:
        # the original stays where it is (a copy touching it): the rest is the copy, less
        # any other part the guide part holds in place (a copy touching two coins)
        held = s_part.copy()
        for other in source_parts or []:
            if (other & g_part).sum() >= KEPT_SHARE * other.sum():
                held |= other
        found, g_rest, s_rest = [], g_part & ~held, np.zeros_like(s_part)
    else:
        return []
    whole = np.logical_or.reduce([s_part, *(source_parts or [])])  # the selection
    least = max(MIN_PART_PX, REST_SHARE * int(g_part.sum()))
    g_pieces = [p for p in _parts(g_rest) if p.sum() >= least]
    s_pieces = [p for p in _parts(s_rest) if p.sum() >= least]
    if g_pieces and not s_pieces:  # a copy touching an original: a whole part is the copy
        s_pieces = source_parts or [s_part]
    for g_piece in g_pieces:
        # a piece is clipped where it touches what stays: its area and aspect only shortlist
        # the parts it may come from, the overlap search decides
        near = sorted(s_pieces, key=lambda p: float(np.abs(_signature(p) - _signature(g_piece))
                                                    .sum()))[:PIECE_CANDIDATES]
        fits = [(_fit(p, g_piece, reshape), p) for p in near]
        (t_piece, piece_score), s_piece = max(fits, key=lambda f: f[0][1])
        # or the piece's own shape found within the selection (a spoon selected with its
        # cup; a coin whose copy is clipped by the two it touches), carried at its own size
        t_found, found_score = _locate(g_piece, whole)
        if t_found is not None and found_score > piece_score - 1e-9:  # a tie: its own size
            t_piece, piece_score = t_found, found_score
            s_piece = whole & _warp_mask(g_piece, _inverse(t_found), whole.shape)
        if piece_score >= MIN_IOU:
            found.append((s_piece, g_piece, t_piece))
    return found


def _locate(piece: np.ndarray, source: np.ndarray) -> tuple[Transform | None, float]:
    """The shift that puts the guide piece's shape onto the source where the source there is
    that shape and no more, as (transform, score): the score is the IoU of the piece with the
    source within LOCATE_RING px of it (1: the source holds exactly the piece's shape there;
    inside a larger blob it falls, so a spoon is found where the spoon is, not anywhere
    within the cup). Every shift is scored at once (FFT correlation); (None, 0) when the
    piece is larger than the image."""
    box = bounding_box(piece)
    h, w = source.shape
    r = LOCATE_RING
    if box is None or box.height + 2 * r > h or box.width + 2 * r > w:
        return None, 0.0
    ch, cw = box.height + 2 * r, box.width + 2 * r
    shape = np.zeros((ch, cw), bool)
    shape[r : r + box.height, r : r + box.width] = box.crop(piece)
    around = dilate(shape, r) & ~shape
    size = (h + ch, w + cw)
    spectrum = np.fft.rfft2(source.astype(np.float64), size)

    def correlation(kernel: np.ndarray) -> np.ndarray:
        """Per top-left (y, x) of the kernel inside the image: its pixels on the source."""
        flipped = np.fft.rfft2(kernel[::-1, ::-1].astype(np.float64), size)
        return np.fft.irfft2(spectrum * flipped, size)[ch - 1 : h, cw - 1 : w]

    inside = correlation(shape)
    score = inside / (shape.sum() + correlation(around))
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    # the piece's pixel (box.top + i, box.left + j) comes from source pixel (y + i - r, ...)
    dy, dx = box.top - r - y, box.left - r - x
    centre, _ = _extent(piece)
    to = (float(centre[0]), float(centre[1]))
    return Transform((to[0] - dy, to[1] - dx), to, (1.0, 1.0)), float(score[y, x])


def transfer_start(image: np.ndarray, source: np.ndarray, guide: np.ndarray, mode: str
                   ) -> np.ndarray | None:
    """The photo with the object's own pixels warped onto each part of the guide (uint8
    HxWx3), as a layer the artist moved gives, or None when no part of the guide is explained
    by a part of the source (a guide that only changes the outline is left to the synthesis).
    Pixels of the guide the warped object does not cover stay the photo's."""
    if mode not in (EditKind.MOVE, EditKind.COPY, EditKind.RESHAPE) or not source.any() or not guide.any():
        return None
    h, w = source.shape
    factor = max(1, -(-max(h, w) // SEARCH_SIDE))
    small_source = block_share(source, factor) > 0.5
    small_guide = block_share(guide, factor) > 0.5
    source_parts, guide_parts = _parts(small_source), _parts(small_guide)
    if not source_parts or not guide_parts:
        return None
    out = image.copy()
    pasted = False
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    for s_whole, g_whole in _pairs(source_parts, guide_parts):
        if _iou(s_whole, g_whole) > 0.98:
            continue  # this part stays where it is
        others = np.zeros_like(g_whole)
        for other in guide_parts:
            if other is not g_whole:
                others |= other
        for s_part, g_part, t in _moves(s_whole, g_whole, mode == EditKind.RESHAPE, source_parts,
                                        copy=mode == EditKind.COPY):
            pasted |= _paste(out, pixels, source, guide, s_part, g_part, t, others, factor,
                             mode)
    return out if pasted else None


def _best_shift(full_source: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                starts: list[tuple[float, float]], factor: int) -> tuple[int, int]:
    """The whole-pixel shift, from the better of `starts` (the full-size centres' difference;
    the small copy's overlap search, whose steps are `factor` px), that lands most of the guide
    part's pixels (ys, xs) on the object, refined pixel by pixel at full size."""
    h, w = full_source.shape

    def hits(d: tuple[int, int]) -> int:
        sy, sx = ys - d[0], xs - d[1]
        ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        return int(full_source[sy[ok], sx[ok]].sum())

    start = max(((round(a), round(b)) for a, b in starts), key=hits)
    steps, step = [], max(1, factor // 2)
    while step >= 1:
        steps.append(step)
        step //= 2
    return _climb(start, hits, steps)[0]


def _paste(out: np.ndarray, pixels: torch.Tensor, source: np.ndarray, guide: np.ndarray,
           s_part: np.ndarray, g_part: np.ndarray, t: Transform, others: np.ndarray,
           factor: int, mode: str) -> bool:
    """Warp the photo's object pixels of `s_part` onto `g_part` (parts of the small copies)
    in `out` at full size; False when no pixel of the guide part comes from the object."""
    h, w = source.shape
    # at full size: the pixels of the guide part whose source lies in the object (the
    # part's blocks grown by one block: the small copy's outline is a staircase, the
    # guide's own is not)
    top = (_full_size(g_part, factor, (h, w)) & guide
           & ~_full_size(others, factor, (h, w), grow=False))
    ys, xs = np.nonzero(top)
    # the centres measured at full size, moved by what the overlap search found
    full_source = _full_size(s_part, factor, (h, w)) & source
    cs, _ = _extent(full_source)
    cg, _ = _extent(top)
    c0, _ = _extent(g_part)
    frm = (float(cs[0]), float(cs[1]))
    to = (float(cg[0] + (t.to[0] - c0[0]) * factor), float(cg[1] + (t.to[1] - c0[1]) * factor))
    scale = t.scale
    if mode != EditKind.RESHAPE and t.scale != (1.0, 1.0):
        # the size from the full-size areas (a fit of the whole part on the small copy); a
        # part fitted at its own size keeps it exactly
        k = float(np.sqrt(top.sum() / max(1, full_source.sum())))
        scale = (1.0, 1.0) if abs(k - 1) < SAME_SIZE else (k, k)
    if scale == (1.0, 1.0):  # a move by whole pixels carries the photo's pixels exactly
        shift = _best_shift(full_source, ys, xs, [(cg[0] - cs[0], cg[1] - cs[1]),
                                                  (to[0] - frm[0], to[1] - frm[1])], factor)
        to = (frm[0] + shift[0], frm[1] + shift[1])
    sy, sx = Transform(frm, to, scale).source_of(ys.astype(np.float64), xs.astype(np.float64))
    iy, ix = np.rint(sy).astype(int), np.rint(sx).astype(int)
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    ok[ok] = source[iy[ok], ix[ok]]
    if not ok.any():
        return False
    # bilinear samples of the photo there (exact for whole-pixel shifts)
    grid = torch.from_numpy(np.stack([sx[ok] / max(1, w - 1) * 2 - 1,
                                      sy[ok] / max(1, h - 1) * 2 - 1], axis=-1))
    sampled = F.grid_sample(pixels, grid.float().view(1, 1, -1, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)[0, :, 0].T
    out[ys[ok], xs[ok]] = sampled.round().clamp(0, 255).to(torch.uint8).numpy()
    return True
