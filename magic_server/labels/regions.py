"""Tidying a label map into flat regions a pencil could paint (numpy only, for
labels.clustering): a majority filter, connected regions, and merging specks into the label
around them."""

from __future__ import annotations

import numpy as np

from magic_server.engine.components import connected_regions


def box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over a (2r+1)x(2r+1) window with edge-replicated borders, for HxW or HxWxC arrays
    (an integral image: the cost does not grow with r)."""
    if r <= 0:
        return a.astype(np.float64)
    pad = [(r + 1, r), (r + 1, r)] + [(0, 0)] * (a.ndim - 2)
    c = np.pad(a.astype(np.float64), pad, mode="edge")
    c[0] = 0
    c[:, 0] = 0
    c = c.cumsum(0).cumsum(1)
    n = 2 * r + 1
    return c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]


def box_mean(a: np.ndarray, r: int) -> np.ndarray:
    return box_sum(a, r) / (2 * r + 1) ** 2


def majority_filter(labels: np.ndarray, count: int, r: int) -> np.ndarray:
    """Each pixel takes the most frequent label of its (2r+1)^2 window; a tie keeps its own."""
    best = np.full(labels.shape, -1.0)
    out = labels.copy()
    for k in range(count):
        votes = box_sum((labels == k).astype(np.float32), r) + 0.5 * (labels == k)
        better = votes > best
        out[better] = k
        best[better] = votes[better]
    return out


def _region_neighbours(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (region, neighbouring region) for every 4-neighbour pixel pair across a region
    boundary, both directions."""
    pairs = []
    for x, y in ((regions[:, 1:], regions[:, :-1]), (regions[1:], regions[:-1])):
        cut = x != y
        pairs.append((x[cut], y[cut]))
        pairs.append((y[cut], x[cut]))
    return (np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))


def merge_specks(labels: np.ndarray, min_area: int, rounds: int = 8) -> np.ndarray:
    """Regions smaller than min_area take the label they share the longest border with
    (counting borders with regions that are big enough first: a cluster of specks joins the
    region around it, not one another)."""
    labels = labels.copy()
    for _ in range(rounds):
        regions, n = connected_regions(labels)
        areas = np.bincount(regions.ravel(), minlength=n)
        small = areas < min_area
        if not small.any() or n == 1:
            break
        region_label = np.zeros(n, labels.dtype)
        region_label[regions.ravel()] = labels.ravel()
        mine, theirs = _region_neighbours(regions)
        keep = small[mine]
        mine, theirs = mine[keep], theirs[keep]
        # border length with big regions counts far more than with other specks
        weight = np.where(small[theirs], 1.0, 1e6)
        key = mine.astype(np.int64) * 256 + region_label[theirs]
        keys, inverse = np.unique(key, return_inverse=True)
        length = np.bincount(inverse, weights=weight)
        order = np.lexsort((length, keys // 256))  # per region, longest border last
        last = np.r_[keys[order][1:] // 256 != keys[order][:-1] // 256, True]
        winners = keys[order][last]
        new_label = region_label.copy()
        new_label[winners // 256] = (winners % 256).astype(labels.dtype)
        labels = new_label[regions]
    return labels
