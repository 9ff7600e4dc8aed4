"""A first label map of a photo for layout edits (issue 12): regions of like colour and texture
that an artist then touches up, and the flat colours to paint them with.

    first_label_map(image, labels, seed=0) -> (H, W) uint8 label indices 0..labels-1
    label_palette(n) -> (n, 3) uint8 colours; colour_map(indices, palette) -> HxWx3 uint8

How: on a copy of at most WORK_PIXELS pixels, each pixel is described by its Lab colour
(3x3 mean), its texture (lightness std over 3x3 and 7x7 in the least varying quadrant window,
log-compressed) and, with a small weight, its position; k-means
groups them into `labels` clusters. The map is then tidied: a majority filter, then regions smaller than
MIN_REGION_SHARE of the photo merged into the label around them. A label the tidying
swallowed is split off again from the label that varies most, so every index is used. Back at
full size, pixels near a region boundary choose between the labels around them by colour, so
the boundary follows the photo's edges and not the working copy's pixel grid.

Labels are ordered by area: 0 is the largest region. A photo with fewer distinct colours than
`labels` gets one label per colour it has (a flat image: a single label).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from PIL import Image

from magic_protocol.protocol import MAX_LABELS, MIN_LABELS
from magic_server.engine.api import Cancelled
from magic_server.engine.components import connected_regions
from magic_server.labels.regions import box_mean, majority_filter, merge_specks

WORK_PIXELS = 200_000  # k-means runs on a copy of about this many pixels
MIN_REGION_SHARE = 0.002  # smaller regions are specks and join the label around them
COLOUR_WEIGHT, TEXTURE_WEIGHT, POSITION_WEIGHT = 1.0, 0.7, 0.3
TEXTURE_UNITS = 10.0  # texture features are 10 log(1 + std of Lab lightness)
COLOUR_FLOOR, TEXTURE_FLOOR = 5.0, 3.0  # spreads (Lab units / texture units) taken as noise
KMEANS_ITERATIONS = 30
KMEANS_RESTARTS = 3
KMEANS_SAMPLE = 20_000
# A boundary pixel at full size leaves the working copy's label only for a label whose colour
# model explains it clearly better (in log-likelihood): textured regions must not fray.
SWITCH_MARGIN = 3.0

# Chosen (by a search over RGB) so read_label_maps can tell them apart: every two at least
# 87 apart, every colour at least 58 from the straight line between any two others; for maps
# of up to 4 labels, an anti-aliased blend of two label colours is nearest one of the two.
LABEL_PALETTE = np.array([
    (171, 88, 0), (199, 238, 177), (205, 1, 216), (0, 155, 145), (83, 46, 241), (67, 14, 52),
    (40, 202, 64), (209, 215, 33), (255, 40, 136), (174, 124, 255), (68, 159, 252),
    (43, 109, 0), (11, 48, 138), (255, 183, 117), (148, 255, 82), (210, 5, 58),
], np.uint8)

ClusteringProgress = Callable[[int, int], None]
STEPS = 5  # progress is reported as (step, STEPS): features, k-means, tidy, count, size


def label_palette(n: int) -> np.ndarray:
    """The first n label colours, (n, 3) uint8."""
    if not 1 <= n <= len(LABEL_PALETTE):
        raise ValueError(f"a palette has 1 to {len(LABEL_PALETTE)} colours, not {n}")
    return LABEL_PALETTE[:n].copy()


def colour_map(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label indices (H, W) painted in their palette colours: HxWx3 uint8."""
    if indices.size and int(indices.max()) >= len(palette):
        raise ValueError(f"label {int(indices.max())} has no colour in a palette of "
                         f"{len(palette)}")
    return np.asarray(palette, np.uint8)[indices]


# ---------------------------------------------------------------------------- features


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) sRGB to CIE Lab (D65), float32."""
    c = np.arange(256, dtype=np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    lin = linear[rgb]
    xyz = lin @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192],
                          [0.1805, 0.0722, 0.9505]], np.float32)
    xyz /= np.array([0.9505, 1.0, 1.089], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1).astype(np.float32)


def _local_std(a: np.ndarray, r: int) -> np.ndarray:
    m = box_mean(a, r)
    return np.sqrt(np.maximum(box_mean(a * a, r) - m * m, 0))


def _quadrant_min_std(a: np.ndarray, r: int) -> np.ndarray:
    """The least local std among the four (2r+1)^2 windows that have the pixel in a corner."""
    p = np.pad(_local_std(a, r), r, mode="edge")
    h, w = a.shape
    return np.minimum.reduce([p[dy:dy + h, dx:dx + w] for dy in (0, 2 * r) for dx in (0, 2 * r)])


def _standardised(group: np.ndarray, weight: float, floor: float = 1e-6) -> np.ndarray:
    """A feature group (N, d) centred and scaled to a total variance of weight**2, so colour,
    texture and position weigh what their weights say whatever the photo's contrast; a group
    that hardly varies (spread under `floor`) is not blown up to that weight: its variation is
    noise."""
    centred = group - group.mean(0)
    spread = float(np.sqrt((centred ** 2).sum(1).mean()))
    return centred * (weight / max(spread, floor))


def _pixel_features(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features (h*w, 7) float32, smoothed Lab (h, w, 3)) of the working copy."""
    h, w = small.shape[:2]
    raw = _srgb_to_lab(small)
    lab = box_mean(raw, 1).astype(np.float32)
    light = raw[..., 0].astype(np.float64)
    # Texture is measured in the quadrant window of each size that varies least: a pixel
    # beside an edge then has a window on its own side, so colour edges do not read as
    # texture and a textured region does not spread a window's width into a smooth one.
    energy = np.stack([_quadrant_min_std(light, 1), _quadrant_min_std(light, 3)], axis=-1)
    texture = TEXTURE_UNITS * np.log1p(energy)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    features = np.concatenate([
        _standardised(lab.reshape(-1, 3), COLOUR_WEIGHT, COLOUR_FLOOR),
        _standardised(texture.reshape(h * w, -1), TEXTURE_WEIGHT, TEXTURE_FLOOR),
        _standardised(np.stack([yy, xx], -1).reshape(-1, 2), POSITION_WEIGHT),
    ], axis=1)
    return features.astype(np.float32), lab


# ---------------------------------------------------------------------------- k-means


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (centres * centres).sum(1)[None] - 2 * x @ centres.T
    return np.maximum(d, 0)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    nearest = _sq_distances(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        i = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=nearest / total)
        centres.append(x[i])
        nearest = np.minimum(nearest, _sq_distances(x, x[i][None])[:, 0])
    return np.stack(centres)


def _lloyd(x: np.ndarray, centres: np.ndarray, iterations: int,
           check: Callable[[], None]) -> tuple[np.ndarray, np.ndarray, float]:
    centres = centres.copy()
    for _ in range(iterations):
        check()
        d = _sq_distances(x, centres)
        assign = d.argmin(1)
        moved = False
        for k in range(len(centres)):
            members = assign == k
            if members.any():
                new = x[members].mean(0)
            else:  # an empty cluster restarts at the point worst served
                new = x[d[np.arange(len(x)), assign].argmax()]
            moved |= not np.allclose(new, centres[k], atol=1e-4)
            centres[k] = new
        if not moved:
            break
    d = _sq_distances(x, centres)
    assign = d.argmin(1)
    return centres, assign, float(d[np.arange(len(x)), assign].sum())


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator,
           check: Callable[[], None] = lambda: None) -> tuple[np.ndarray, np.ndarray]:
    """(centres (k, d), cluster index per row of x): the best of a few k-means++ starts on a
    sample, then Lloyd iterations on every row."""
    sample = x[rng.choice(len(x), min(len(x), KMEANS_SAMPLE), replace=False)]
    best = None
    for _ in range(KMEANS_RESTARTS):
        centres, _, cost = _lloyd(sample, _plus_plus(sample, k, rng), KMEANS_ITERATIONS, check)
        if best is None or cost < best[1]:
            best = (centres, cost)
    centres, assign, _ = _lloyd(x, best[0], KMEANS_ITERATIONS, check)
    return centres, assign



# ---------------------------------------------------------------------------- the map


def _working_copy(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, (WORK_PIXELS / (h * w)) ** 0.5)
    if scale == 1.0:
        return image
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def distinct_colours(image: np.ndarray, enough: int) -> int:
    """How many distinct colours the photo has, counted up to `enough` (a strided sample
    first: a photo has thousands; only a flat or posterised one needs the full count)."""
    step = max(1, int((image.shape[0] * image.shape[1] / 1_000_000) ** 0.5))
    seen = len(np.unique(_packed(image[::step, ::step])))
    if seen >= enough or step == 1:
        return min(seen, enough)
    return min(len(np.unique(_packed(image))), enough)


def _packed(rgb: np.ndarray) -> np.ndarray:
    return ((rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
            | rgb[..., 2])


def _tidy(labels: np.ndarray, count: int, min_area: int, radius: int) -> np.ndarray:
    labels = majority_filter(labels, count, radius)
    return merge_specks(labels, min_area)


def _split_worst(labels: np.ndarray, features: np.ndarray, free_index: int, tried: set,
                 rng: np.random.Generator) -> bool:
    """Split the untried label whose pixels vary most (sum of squared feature deviations) in
    two by 2-means, with position weighted up so the halves are places, not speckle."""
    flat = labels.ravel()
    spread = {}
    for k in np.unique(flat):
        if int(k) not in tried:
            f = features[flat == k]
            spread[int(k)] = float(((f - f.mean(0)) ** 2).sum())
    if not spread:
        return False
    k = max(spread, key=spread.get)
    tried.add(k)
    members = np.flatnonzero(flat == k)
    f = features[members].copy()
    f[:, -2:] *= 3
    halves = kmeans(f, 2, rng)[1]
    flat = flat.copy()
    flat[members[halves == 1]] = free_index
    labels[...] = flat.reshape(labels.shape)
    return True


def _split_in_place(labels: np.ndarray, free_index: int) -> None:
    """Last resort for a label count: the largest region cut in two across its longer side."""
    regions, _ = connected_regions(labels)
    biggest = np.bincount(regions.ravel()).argmax()
    ys, xs = np.nonzero(regions == biggest)
    if np.ptp(ys) >= np.ptp(xs):
        far = ys > np.median(ys)
    else:
        far = xs > np.median(xs)
    if not far.any():  # a one-pixel-wide region: split by order along it
        far = np.arange(len(ys)) >= len(ys) // 2
    labels[ys[far], xs[far]] = free_index


def _compact(labels: np.ndarray) -> np.ndarray:
    """Indices 0..n-1 with no gaps, ordered by area (0: the largest)."""
    counts = np.bincount(labels.ravel(), minlength=MAX_LABELS)
    order = [k for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    remap = np.zeros(len(counts), np.uint8)
    remap[order] = np.arange(len(order), dtype=np.uint8)
    return remap[labels]


def _between(n_full: int, n_small: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each full-size row (or column): the working-copy rows before and after its centre,
    and the nearest one."""
    at = (np.arange(n_full) + 0.5) * n_small / n_full - 0.5
    before = np.clip(np.floor(at).astype(np.int64), 0, n_small - 1)
    after = np.minimum(before + 1, n_small - 1)
    nearest = np.clip(np.rint(at).astype(np.int64), 0, n_small - 1)
    return before, after, nearest


def _colour_models(small_labels: np.ndarray, small_lab: np.ndarray, count: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    flat_lab = small_lab.reshape(-1, 3)
    mean = np.zeros((count, 3), np.float32)
    var = np.ones((count, 3), np.float32)
    for k in range(count):
        members = flat_lab[small_labels.ravel() == k]
        if len(members):
            mean[k], var[k] = members.mean(0), members.var(0) + 4.0
    return mean, var


def _full_size(small_labels: np.ndarray, small_lab: np.ndarray, image: np.ndarray,
               count: int) -> np.ndarray:
    """The working map brought to the photo's size: each pixel takes the nearest working
    pixel's label, unless the four working pixels around it disagree: then it picks among
    their labels by colour (a diagonal Gaussian per label, fitted on the working copy)."""
    h, w = small_labels.shape
    H, W = image.shape[:2]
    r0, r1, rn = _between(H, h)
    c0, c1, cn = _between(W, w)
    corners = [np.take(small_labels[r], c, axis=1) for r in (r0, r1) for c in (c0, c1)]
    labels = np.take(small_labels[rn], cn, axis=1)
    band = np.zeros((H, W), bool)
    for other in corners[1:]:
        band |= other != corners[0]
    flat = np.flatnonzero(band)
    if not len(flat):
        return labels
    candidates = np.stack([c.ravel()[flat] for c in corners], axis=1)  # (N, 4)
    mean, var = _colour_models(small_labels, small_lab, count)
    # the pixel's colour, steadied by its diagonal neighbours a sixth of a working pixel away
    # (weighted half: beside an edge the pixel's own side must still win)
    reach = max(1, round(H / h / 6))
    ys, xs = np.divmod(flat, W)
    pixels = image.reshape(-1, 3)
    rgb = 4 * pixels[flat].astype(np.float32)
    for dy in (-reach, reach):
        for dx in (-reach, reach):
            rgb += pixels[np.clip(ys + dy, 0, H - 1) * W + np.clip(xs + dx, 0, W - 1)]
    colour = _srgb_to_lab(np.rint(rgb / 8).astype(np.uint8))
    log_var = np.log(var).sum(-1)
    cost = np.stack([(((colour - mean[k]) ** 2) / var[k]).sum(-1) + log_var[k]
                     for k in candidates.T], axis=1)
    current = labels.ravel()[flat]
    current_cost = np.where(candidates == current[:, None], cost, np.inf).min(1)
    pick = cost.argmin(1)
    best_cost = cost[np.arange(len(flat)), pick]
    switch = best_cost < current_cost - SWITCH_MARGIN
    out = labels.ravel().copy()
    out[flat[switch]] = candidates[np.arange(len(flat)), pick][switch]
    if np.count_nonzero(np.bincount(out, minlength=count)) < count:
        return labels  # a label thinner than a working pixel would vanish: keep the grid's
    return out.reshape(H, W)


def first_label_map(image: np.ndarray, labels: int, *, seed: int = 0,
                    cancel: threading.Event | None = None,
                    on_progress: ClusteringProgress | None = None) -> np.ndarray:
    """A first segmentation of `image` (HxWx3 uint8) into `labels` (2..16) flat regions:
    (H, W) uint8 indices 0..n-1, n = labels unless the photo has fewer distinct colours.
    Raises Cancelled when `cancel` is set; reports (step, total) to on_progress."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("image must be an HxWx3 uint8 array")
    if not MIN_LABELS <= labels <= MAX_LABELS:
        raise ValueError(f"labels must be between {MIN_LABELS} and {MAX_LABELS}, not {labels}")
    step = 0

    def advance() -> None:
        nonlocal step
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        step += 1
        if on_progress is not None:
            on_progress(step, STEPS)

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")

    rng = np.random.default_rng(seed)
    check()
    wanted = distinct_colours(image, labels)
    if wanted < 2:  # a flat photo: one region
        for _ in range(STEPS):
            advance()
        return np.zeros(image.shape[:2], np.uint8)
    small = _working_copy(image)
    h, w = small.shape[:2]
    features, small_lab = _pixel_features(small)
    advance()
    assign = kmeans(features, wanted, rng, check)[1].reshape(h, w).astype(np.uint8)
    advance()
    min_area = max(16, round(MIN_REGION_SHARE * h * w))
    radius = max(1, round(min(h, w) / 120))
    tidy = _tidy(assign, wanted, min_area, radius)
    advance()
    tried: set[int] = set()
    while len(np.unique(tidy)) < wanted:
        check()
        present = set(np.unique(tidy).tolist())
        free = min(set(range(wanted)) - present)
        trial = tidy.copy()
        if not _split_worst(trial, features, free, tried, rng):
            _split_in_place(tidy, free)
            continue
        trial = _tidy(trial, wanted, min_area, radius)
        if len(np.unique(trial)) > len(present):
            tidy, tried = trial, set()
    small_labels = _compact(tidy)
    advance()
    if small.shape[:2] == image.shape[:2]:
        full = small_labels
    else:
        full = _full_size(small_labels, small_lab, image, int(small_labels.max()) + 1)
    result = _compact(full)
    advance()
    return result
