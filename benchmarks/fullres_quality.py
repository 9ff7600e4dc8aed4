"""Issue 17's figures at the photo's own resolution (seam, edges, changed outside, changed beyond
a removal's selection, object structure, halo): benchmarks/quality.py's measures of an edit as
an artist sees it at 100 %."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from quality import _check_pair, _downscale, _mask_resize, dilate, erode

#
# Issue 17's figures, meant for photographs at their own size (2-12 MP); they work at any size.
# "changed" = any channel differs from the photo, judged on the pixels as they are.
#
# - seam: both images box-downscaled to about MEASURE_SIDE px on the long side (a measuring
#   pixel is changed when any photo pixel it covers changed). The rim of the changed pixels is
#   every pixel within RIM_PX of the border between changed and unchanged, kept only where it
#   lies outside the masks (source and guide grown by RIM_PX + 2, so that the object's own
#   outline is not counted). seam = mean squared gradient (Sobel of the luminance, 8-bit levels
#   per px) of the result on that rim over the photo's on the same pixels, both with a floor of
#   GRADIENT_FLOOR added (a flat photo would divide by 0). 1 = no new edge; a tone step or a
#   staircase outline where the changed pixels end scores several times that. nan when
#   nothing changed outside the masks (no rim to judge: a cut-paste that only pastes).
# - edges: at the same size, the fill = changed pixels outside the guide grown by 0.5% of the
#   long side (what was synthesized around and instead of the object, away from the new
#   object's outline); the ring = pixels within 2.5% of the long side of the changed ones,
#   unchanged and away from both masks. edges = the share of fill pixels whose gradient
#   magnitude in the result exceeds the 99th percentile of the photo's gradient on the ring,
#   over 1%: 1 = as edgy as the surroundings, a staircase or a tone step in a smooth fill
#   several times that. nan when there is no fill. The percentile is taken on the ring near
#   each fill pixel (tiles of 5% of the long side, the ring within another 5% around them,
#   farther where too little of it is that near): a fill beside the bokeh is judged by the
#   bokeh, not by the sharp petals on the far side of the same region, whose edges would
#   hide a staircase in the bokeh (the garden move measured 0.54 with one threshold for the
#   whole ring, its blocky halo plain in the crops). The targets judge this local figure.
# - edges (whole ring): the same with one threshold, the 99th percentile over the whole ring,
#   as issue 17 words it; reported beside, as a reference. The local figure is the stricter
#   where a smooth fill shares its ring with a sharp object, the whole ring's where the
#   ring near the fill is textured and far from it smooth.
# - edges (object): the same inside the guide (eroded by the band) against the 99th
#   percentile of the photo's gradient inside the source mask (eroded): is the placed object
#   edgier than the object was? (A figure beside the issue's, no target.)
# - changed outside: share of the whole image changed farther than 2.5% of the long side from
#   the masks (Euclidean distance, full resolution).
# - changed beyond selection (removals): pixels changed farther than 2% of the hole's diameter
#   (the larger side of the removed selection's bounding box) from the selection (source minus
#   guide), counted and as a share of the image; 0 = what stays, stays.
# - object structure (moves, copies, reshapes): the expected image is the result with, inside
#   the guide, the photo's object carried by the known transform T (q = s * p + t, per axis:
#   a translation, or a scaling and translation); for a copy the guide's pixels that T does not
#   reach keep the photo's object. On the box around both masks (grown by 10%), downscaled to
#   STRUCTURE_SIDE px on its long side, the mean SSIM (7x7 windows, colour) between the result
#   and the expected image over the guide pixels whose expected value is known. 1 = the object
#   arrived whole; a torn or replaced object scores far less. Measured on the edit's box
#   rather than the whole image so that a small object in a large photo still spans enough
#   measuring pixels (for the bundled 512 px scenes the box is most of the image).
# - halo (a figure beside the issue's, no target): the mean absolute difference from the photo
#   (8-bit levels, RGB averaged) on the ring just outside the guide (from 2 px to 1.5% of the
#   long side beyond it, the source mask left out): the old background a placed object carries
#   around it, or a lighter box around it, shows here even where its edge is too faint to
#   count in `edges` (a cut-paste scores 0).

MEASURE_SIDE = 1000
RIM_PX = 2
GRADIENT_FLOOR = 0.25  # (8-bit levels per px)^2, added to both energies of the seam ratio
EDGE_BAND = 0.005  # of the long side: the object's outline band left out of the fill
RING = 0.025  # of the long side: the photo's surroundings that set the edge threshold
OUTSIDE_BAND = 0.025  # of the long side: changed outside = beyond this distance from masks
REMOVAL_GROW = 0.02  # of the hole's diameter
STRUCTURE_SIDE = 96


def changed_pixels(photo: np.ndarray, result: np.ndarray) -> np.ndarray:
    """bool HxW: any channel differs from the photo."""
    _check_pair(photo, result)
    return np.any(photo != result, axis=-1)


def luminance_gradient(img: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the luminance (Sobel, normalised to 8-bit levels per px)."""
    from scipy import ndimage

    lum = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gy = ndimage.sobel(lum, 0, mode="nearest") / 8
    gx = ndimage.sobel(lum, 1, mode="nearest") / 8
    return np.hypot(gx, gy)


def _measuring_copies(photo: np.ndarray, result: np.ndarray, changed: np.ndarray,
                      masks: list[np.ndarray], long_side: int):
    ph, _ = _downscale(photo, long_side)
    rs, _ = _downscale(result, long_side)
    shape = ph.shape[:2]
    return ph, rs, _mask_resize(changed, shape), [_mask_resize(m, shape) for m in masks]


def seam_ratio(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
               guide_mask: np.ndarray, *, long_side: int = MEASURE_SIDE,
               changed: np.ndarray | None = None) -> float:
    """Gradient energy of the result on the rim of its changed pixels outside the masks, over
    the photo's there (1 = no new edge; nan when nothing changed outside the masks)."""
    _check_pair(photo, result, source_mask, guide_mask)
    if changed is None:
        changed = changed_pixels(photo, result)
    ph, rs, ch, (src, gd) = _measuring_copies(photo, result, changed,
                                              [source_mask, guide_mask], long_side)
    rim = dilate(ch, RIM_PX) & ~erode(ch, RIM_PX) & ~dilate(src | gd, RIM_PX + 2)
    if not rim.any():
        return math.nan
    e_res = float(np.mean(luminance_gradient(rs)[rim] ** 2))
    e_ph = float(np.mean(luminance_gradient(ph)[rim] ** 2))
    return (e_res + GRADIENT_FLOOR) / (e_ph + GRADIENT_FLOOR)


def _share_above(values: np.ndarray, reference: np.ndarray) -> float:
    """Share of `values` above the 99th percentile of `reference`, over 1%."""
    if values.size == 0 or reference.size == 0:
        return math.nan
    threshold = float(np.percentile(reference, 99))
    return float(np.mean(values > threshold)) / 0.01


def local_p99(values: np.ndarray, where: np.ndarray, tile: int, reach: int,
              need: np.ndarray | None = None, min_count: int = 400) -> np.ndarray:
    """Per pixel, the 99th percentile of `values` over the pixels of `where` within the
    pixel's tile (tile x tile) grown by `reach`; a tile with fewer than `min_count` such pixels
    grows its reach (doubling) until it has them, or takes the percentile over all of `where`.
    Only tiles holding a pixel of `need` (default: all) are computed (nan elsewhere)."""
    h, w = values.shape
    overall = float(np.percentile(values[where], 99)) if where.any() else math.nan
    out = np.full((h, w), np.nan)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            if need is not None and not need[y0:y1, x0:x1].any():
                continue
            r, vals = reach, np.empty(0)
            while vals.size < min_count and r < 2 * max(h, w):
                ys = slice(max(0, y0 - r), min(h, y1 + r))
                xs = slice(max(0, x0 - r), min(w, x1 + r))
                vals = values[ys, xs][where[ys, xs]]
                r *= 2
            out[y0:y1, x0:x1] = (float(np.percentile(vals, 99)) if vals.size >= min_count
                                 else overall)
    return out


def edge_ratios(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                guide_mask: np.ndarray, *, long_side: int = MEASURE_SIDE,
                changed: np.ndarray | None = None, local: bool = True) -> tuple[float, float]:
    """(edges, edges of the placed object): see the section's comment. local=False: one
    threshold, the percentile over the whole ring (edges (whole ring))."""
    near, whole, edges_obj = edge_figures(photo, result, source_mask, guide_mask,
                                          long_side=long_side, changed=changed,
                                          local=local, whole_ring=not local)
    return near if local else whole, edges_obj


def edge_figures(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                 guide_mask: np.ndarray, *, long_side: int = MEASURE_SIDE,
                 changed: np.ndarray | None = None, local: bool = True,
                 whole_ring: bool = True) -> tuple[float, float, float]:
    """(edges, edges (whole ring), edges of the placed object) from one pass over the
    measuring copies; a figure not asked for (local, whole_ring) is nan."""
    _check_pair(photo, result, source_mask, guide_mask)
    if changed is None:
        changed = changed_pixels(photo, result)
    ph, rs, ch, (src, gd) = _measuring_copies(photo, result, changed,
                                              [source_mask, guide_mask], long_side)
    side = max(ph.shape[:2])
    band = max(2, round(EDGE_BAND * side))
    ring_r = max(3, round(RING * side))
    g_ph, g_rs = luminance_gradient(ph), luminance_gradient(rs)
    fill = ch & ~dilate(gd, band)
    ring = dilate(ch, ring_r) & ~ch & ~dilate(src | gd, band)
    if not ring.any():  # the changes cover everything near: the photo away from the masks
        ring = ~dilate(src | gd, band)
    near = whole = math.nan
    if fill.any() and local:
        threshold = local_p99(g_ph, ring, 2 * ring_r, 2 * ring_r, need=fill)
        near = float(np.mean(g_rs[fill] > threshold[fill])) / 0.01
    if fill.any() and whole_ring:
        whole = _share_above(g_rs[fill], g_ph[ring])
    obj = ch & erode(gd, band)
    obj_ref = erode(src, band)
    edges_obj = (_share_above(g_rs[obj], g_ph[obj_ref]) if obj.any() and obj_ref.any()
                 else math.nan)
    return near, whole, edges_obj


def _distance_from(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of every pixel from the nearest pixel of `mask` (inf if empty)."""
    from scipy import ndimage

    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndimage.distance_transform_edt(~mask)


def changed_outside(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                    guide_mask: np.ndarray, *, band: float = OUTSIDE_BAND,
                    changed: np.ndarray | None = None) -> float:
    """Share of the image changed farther than `band` x the long side from the masks."""
    _check_pair(photo, result, source_mask, guide_mask)
    if changed is None:
        changed = changed_pixels(photo, result)
    far = _distance_from(source_mask | guide_mask) > band * max(photo.shape[:2])
    return float((changed & far).mean())


def changed_outside_levels(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                           guide_mask: np.ndarray, *, band: float = OUTSIDE_BAND
                           ) -> tuple[float, int]:
    """(mean, max) absolute difference from the photo (levels, the channels' largest) of the
    pixels changed outside: how strong the grain beyond the band is (0, 0 when none)."""
    d = np.abs(result.astype(np.int16) - photo.astype(np.int16)).max(axis=-1)
    far = _distance_from(source_mask | guide_mask) > band * max(photo.shape[:2])
    vals = d[far & (d > 0)]
    return (float(vals.mean()), int(vals.max())) if vals.size else (0.0, 0)


@dataclass
class BeyondSelection:
    pixels: int  # changed pixels beyond the grown selection
    share: float  # of the whole image
    grow_px: float  # how far the selection was grown (2% of the hole's diameter)
    farthest_px: float  # distance of the farthest changed pixel from the selection


def changed_beyond_selection(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                             guide_mask: np.ndarray, *, grow: float = REMOVAL_GROW,
                             changed: np.ndarray | None = None) -> BeyondSelection:
    """For a removal: what changed beyond the removed selection (source minus guide) grown by
    `grow` x the hole's diameter (the larger side of its bounding box)."""
    _check_pair(photo, result, source_mask, guide_mask)
    if changed is None:
        changed = changed_pixels(photo, result)
    hole = source_mask & ~guide_mask
    if not hole.any():
        raise ValueError("nothing is removed: the guide keeps every pixel of the source mask")
    ys, xs = np.nonzero(hole)
    diameter = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    grow_px = grow * float(diameter)
    dist = _distance_from(hole)
    beyond = changed & (dist > grow_px)
    farthest = float(dist[changed].max()) if changed.any() else 0.0
    return BeyondSelection(int(beyond.sum()), float(beyond.mean()), grow_px, farthest)


def _transform_parts(t) -> tuple[float, float, float, float]:
    """(sy, sx, ty, tx) from an object with those attributes or a 4-sequence."""
    if hasattr(t, "sy"):
        return float(t.sy), float(t.sx), float(t.ty), float(t.tx)
    sy, sx, ty, tx = t
    return float(sy), float(sx), float(ty), float(tx)


def _moving_parts(source_mask: np.ndarray, guide_mask: np.ndarray) -> np.ndarray:
    """The source mask's connected parts that touch where the masks differ (all of it if none
    do): what the edit moves; the others stay where they are."""
    from scipy import ndimage

    labels, _ = ndimage.label(source_mask)
    near = ndimage.binary_dilation(source_mask ^ guide_mask, structure=np.ones((3, 3), bool))
    hit = np.unique(labels[near & source_mask])
    hit = hit[hit > 0]
    return np.isin(labels, hit) if len(hit) else source_mask


def expected_object(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                    guide_mask: np.ndarray, transform, box: tuple[int, int, int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(expected image, known) on `box` (y0, x0, y1, x1): the result with, on the guide's
    pixels, the photo's object carried by the transform (q = s * p + t); where the transform
    brings no source pixel but the guide keeps the photo's object in place (a copy's original),
    the photo. `known`: guide pixels whose expected value this defines."""
    from scipy import ndimage

    sy, sx, ty, tx = _transform_parts(transform)
    y0, x0, y1, x1 = box
    h, w = source_mask.shape
    exp = result[y0:y1, x0:x1].copy()
    gd = guide_mask[y0:y1, x0:x1]
    qy, qx = np.nonzero(gd)
    py, px = (qy + y0 - ty) / sy, (qx + x0 - tx) / sx
    iy, ix = np.rint(py).astype(np.int64), np.rint(px).astype(np.int64)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    # only the parts the edit moves are carried: a part in both masks at the same place
    # (the astronaut's helmet, while the shuttle moves) stays the photo's
    moving = _moving_parts(source_mask, guide_mask)
    carried = np.zeros(len(qy), bool)
    carried[inside] = moving[iy[inside], ix[inside]]
    if carried.any():
        coords = np.stack([py[carried], px[carried]])
        vals = np.stack([ndimage.map_coordinates(photo[..., c].astype(np.float32), coords,
                                                 order=1, mode="nearest") for c in range(3)], -1)
        exp[qy[carried], qx[carried]] = np.clip(np.rint(vals), 0, 255).astype(np.uint8)
    kept = ~carried & source_mask[y0:y1, x0:x1][qy, qx]
    exp[qy[kept], qx[kept]] = photo[y0:y1, x0:x1][qy[kept], qx[kept]]
    known = np.zeros_like(gd)
    known[qy[carried | kept], qx[carried | kept]] = True
    return exp, known


def object_structure(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                     guide_mask: np.ndarray, transform, *, long_side: int = STRUCTURE_SIDE
                     ) -> float:
    """Mean SSIM between the result and the object carried by `transform`, inside the guide,
    on the edit's box at `long_side` px (see the section's comment). nan: nothing to compare."""
    from skimage.metrics import structural_similarity

    _check_pair(photo, result, source_mask, guide_mask)
    both = source_mask | guide_mask
    if not guide_mask.any():
        return math.nan
    ys, xs = np.nonzero(both)
    h, w = both.shape
    my = max(2, round(0.1 * (ys.max() - ys.min() + 1)))
    mx = max(2, round(0.1 * (xs.max() - xs.min() + 1)))
    box = (max(0, ys.min() - my), max(0, xs.min() - mx), min(h, ys.max() + 1 + my),
           min(w, xs.max() + 1 + mx))
    exp, known = expected_object(photo, result, source_mask, guide_mask, transform, box)
    y0, x0, y1, x1 = box
    res_c = result[y0:y1, x0:x1]
    res_s, _ = _downscale(res_c, long_side)
    exp_s, _ = _downscale(exp, long_side)
    known_s = np.asarray(box_fraction(known, res_s.shape[:2])) >= 0.5
    if not known_s.any():
        return math.nan
    win = min(7, *(d - (1 - d % 2) for d in res_s.shape[:2]))
    if win < 3:
        return math.nan
    _, ssim_map = structural_similarity(res_s, exp_s, win_size=win, channel_axis=2,
                                        data_range=255, full=True)
    return float(ssim_map.mean(axis=-1)[known_s].mean())


def box_fraction(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The share of each measuring pixel that `mask` covers, at `shape` (box filter)."""
    from PIL import Image

    m = Image.fromarray(mask.astype(np.float32)).resize((shape[1], shape[0]),
                                                       Image.Resampling.BOX)
    return np.asarray(m)


HALO_RING = 0.015  # of the long side


def halo_levels(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                guide_mask: np.ndarray) -> float:
    """Mean |result - photo| (levels) on the ring just outside the guide (nan: no ring)."""
    _check_pair(photo, result, source_mask, guide_mask)
    if not guide_mask.any():
        return math.nan
    dist = _distance_from(guide_mask)
    ring = (dist > 2) & (dist <= max(3.0, HALO_RING * max(photo.shape[:2]))) & ~source_mask
    if not ring.any():
        return math.nan
    d = np.abs(result.astype(np.int16) - photo.astype(np.int16)).mean(axis=-1)
    return float(d[ring].mean())


@dataclass
class FullRes:
    seam: float  # nan: nothing changed outside the masks
    edges: float  # nan: no fill
    edges_object: float  # nan: no placed object measured
    changed_outside: float  # share of the image
    object_structure: float | None  # moves, copies, reshapes (None: not measured)
    beyond_selection: BeyondSelection | None  # removals
    changed_share: float  # share of the image changed at all
    halo: float = math.nan  # levels, on the ring just outside the guide (nan: no guide)
    outside_mean_abs: float = 0.0  # levels: the changes counted in changed_outside, mean
    outside_max_abs: int = 0  # and largest
    edges_whole_ring: float = math.nan  # edges with one threshold over the whole ring


def fullres_figures(photo: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                    guide_mask: np.ndarray, mode: str, transform=None) -> FullRes:
    """Every issue-17 figure of one result (transform: for object structure; None skips it)."""
    changed = changed_pixels(photo, result)
    seam = seam_ratio(photo, result, source_mask, guide_mask, changed=changed)
    edges, whole_ring, edges_obj = edge_figures(photo, result, source_mask, guide_mask,
                                                changed=changed)
    outside = changed_outside(photo, result, source_mask, guide_mask, changed=changed)
    structure = beyond = None
    if mode == "remove":
        beyond = changed_beyond_selection(photo, result, source_mask, guide_mask,
                                          changed=changed)
    elif transform is not None:
        structure = object_structure(photo, result, source_mask, guide_mask, transform)
    halo = halo_levels(photo, result, source_mask, guide_mask)
    mean_abs, max_abs = changed_outside_levels(photo, result, source_mask, guide_mask)
    return FullRes(seam, edges, edges_obj, outside, structure, beyond, float(changed.mean()),
                   halo, mean_abs, max_abs, whole_ring)
