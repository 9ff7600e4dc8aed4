"""Coarse-to-fine levels of the edit's region for the product presets.

Synthesis starts small, where a patch covers a large part of the object and noise cannot
survive a few matchings, and ends at the region's own size (up to the preset's limit), so the
photo's detail is synthesized rather than upsampled.
"""

from __future__ import annotations

import math

COARSEST_SIDE = 32  # longest side of the first level
RATIO = 1.6  # size ratio between neighbouring levels
FINE_WEIGHT = 0.5  # share of iterations of a level above the working resolution, per level


def level_sizes(height: int, width: int, finest_side: int,
                coarsest_side: int = COARSEST_SIDE, ratio: float = RATIO
                ) -> list[tuple[int, int]]:
    """(h, w) of each level, coarse to fine, aspect kept; the last is the region's own size
    when its longest side is at most `finest_side`."""
    longest = max(height, width)
    top = min(1.0, finest_side / longest)
    count = max(1, math.ceil(math.log(max(1.0, top * longest / coarsest_side), ratio)) + 1)
    sizes = []
    for i in range(count):
        s = top / ratio ** (count - 1 - i)
        size = (max(8, round(height * s)), max(8, round(width * s)))
        if not sizes or size != sizes[-1]:
            sizes.append(size)
    return sizes


def split_iterations(total: int, sizes: list[tuple[int, int]], working_side: int) -> list[int]:
    """Iterations per level: levels up to the working resolution (where layout is decided)
    get full weight, finer levels (detail only) FINE_WEIGHT each; at least one per level."""
    weights = [1.0 if max(s) <= 1.25 * working_side else FINE_WEIGHT for s in sizes]
    scale = total / sum(weights)
    counts = [max(1, round(w * scale)) for w in weights]
    counts[-1] = max(1, counts[-1] + total - sum(counts)) if total >= len(sizes) else counts[-1]
    return counts
