"""Smooth interpolation and blur: the membrane the finish continues smooth surroundings with
(engine/finish.py) and the carried background is estimated with (engine/carried_background.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

JACOBI_STEPS = 40  # smoothing sweeps per membrane level (the coarse levels do the long range)
COARSEST = 8  # the membrane's pyramid stops when the region is this small
# harmonic_fill with a guide: a step of this height (about 51 levels) in the guide, as sharp
# as the guide's own pixels allow, lets through e^-1 of what a smooth stretch does; block
# edges of a synthesized bokeh (a few to 30 levels) hardly hold it back
GUIDE_EDGE = 0.2
WALL_LEAK = 1e-4  # what flows through the strongest wall, against 1 in a smooth stretch


@dataclass(frozen=True)
class Guide:
    """What steers harmonic_fill. picture (1, C, H, W): whose strong edges the interpolation
    does not cross (the synthesis' fill); stretch: how many of its pixels one of its edges
    spans (an upsampled level: its scale), so a step blurred over them counts at its full
    height; unguided (1, 1, H, W) or None: pixels whose pairs conduct freely whatever the
    picture shows there (the new object: the background continued under it follows none of
    its edges)."""

    picture: torch.Tensor
    stretch: float = 1.0
    unguided: torch.Tensor | None = None

    def halved(self) -> Guide:
        return Guide(F.avg_pool2d(self.picture, 2, ceil_mode=True), self.stretch / 2,
                     None if self.unguided is None
                     else F.max_pool2d(self.unguided, 2, ceil_mode=True))


def neighbours(u: torch.Tensor, border: str = "replicate") -> list[torch.Tensor]:
    """The 4 neighbours of every pixel, up, down, left, right: past the image's border the
    pixel itself ("replicate") or 0 ("constant")."""
    p = F.pad(u, (1, 1, 1, 1), mode=border)
    h, w = u.shape[-2:]
    return [p[..., 0:h, 1:w + 1], p[..., 2:h + 2, 1:w + 1], p[..., 1:h + 1, 0:w],
            p[..., 1:h + 1, 2:w + 2]]


def guided_weights(guide: Guide) -> list[torch.Tensor]:
    """(1, 1, H, W) per neighbour (as neighbours): how freely a pixel's value flows to it,
    exp(-(step / GUIDE_EDGE)^2) for the guide's step between them (its largest channel,
    times the stretch); 1 where either pixel is unguided; 0 past the image's border. A small
    floor (WALL_LEAK) keeps a pixel walled in on every side the mean of its neighbours."""
    picture = guide.picture
    exists = neighbours(torch.ones_like(picture[:, :1]), border="constant")
    loose = None if guide.unguided is None else (guide.unguided > 0.5).float()
    out = []
    for e, n, other in zip(exists, neighbours(picture),
                           [None] * 4 if loose is None else neighbours(loose)):
        step = (picture - n).abs().amax(1, keepdim=True) * max(1.0, guide.stretch)
        weight = torch.exp(-((step / GUIDE_EDGE) ** 2))
        if other is not None:
            weight = torch.where((other + loose) > 0, torch.ones_like(weight), weight)
        out.append((weight + WALL_LEAK) * e)
    return out


def weighted_sweeps(u: torch.Tensor, free: torch.Tensor, fixed: torch.Tensor,
                    weights: list[torch.Tensor], steps: int,
                    wanted: list[torch.Tensor] | None = None) -> torch.Tensor:
    """`steps` weighted Jacobi sweeps of u where `free` (bool), `fixed` elsewhere: each pixel
    the mean of its neighbours (as neighbours), each counted by its weight, plus the wanted
    difference to it when given (a Poisson solve; none: a harmonic one)."""
    total_weight = sum(weights)
    for _ in range(steps):
        if wanted is None:
            total = sum(k * n for k, n in zip(weights, neighbours(u)))
        else:
            total = sum(k * (n + d) for k, n, d in zip(weights, neighbours(u), wanted))
        u = torch.where(free, total / total_weight, fixed)
    return u


def _down(values: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Halve (values, weight): a weighted mean over each 2x2 cell (ceil mode)."""
    total = F.avg_pool2d(values * weight, 2, ceil_mode=True)
    count = F.avg_pool2d(weight, 2, ceil_mode=True)
    mean = total / count.clamp(min=1e-8)
    return mean, (count > 0).float()


def harmonic_fill(values: torch.Tensor, known: torch.Tensor, steps: int = JACOBI_STEPS,
                  guide: Guide | None = None) -> torch.Tensor:
    """values (N, C, H, W) where known (1, 1, H, W) is 1; elsewhere the smooth (harmonic)
    interpolation of the known values: Laplace's equation solved coarse to fine (a pyramid of
    masked means, each level's solution the start of the next finer one's Jacobi sweeps).
    Known values are returned unchanged. guide: the interpolation does not run across the
    strong edges of a picture of the same size (guided_weights): a bud's outline that the
    synthesis drew keeps the bud's cream out of the bokeh above it."""
    known = (known > 0.5).float()
    if float(known.sum()) == 0:
        return torch.zeros_like(values)
    h, w = values.shape[-2:]
    if max(h, w) <= COARSEST or bool(known.all()):
        guess = (values * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True)
        u = torch.where(known > 0, values, guess.expand_as(values))
    else:
        small_v, small_k = _down(values, known)
        small = harmonic_fill(small_v, small_k, steps, None if guide is None else guide.halved())
        u = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        u = torch.where(known > 0, values, u)
    if guide is not None:
        return weighted_sweeps(u, known == 0, values, guided_weights(guide), steps)
    ones = torch.ones_like(known)
    kernel = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]], device=values.device)
    kernel = kernel.view(1, 1, 3, 3)
    # neighbours that exist (the image's border is a free boundary: Neumann)
    count = F.conv2d(F.pad(ones, (1, 1, 1, 1)), kernel)
    weight = kernel.expand(values.shape[1], 1, 3, 3).contiguous()
    for _ in range(steps):
        total = F.conv2d(F.pad(u, (1, 1, 1, 1)), weight, groups=values.shape[1])
        u = torch.where(known > 0, values, total / count)
    return u


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.3:
        return images
    radius = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    k = k / k.sum()
    c = images.shape[1]
    pad = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(pad, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    pad = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(pad, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
