"""Smooth interpolation and blur: the membrane the finish continues smooth surroundings with
(engine/finish.py) and the carried background is estimated with (engine/carried_background.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

JACOBI_STEPS = 40  # smoothing sweeps per membrane level (the coarse levels do the long range)
COARSEST = 8  # the membrane's pyramid stops when the region is this small


def _down(values: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Halve (values, weight): a weighted mean over each 2x2 cell (ceil mode)."""
    total = F.avg_pool2d(values * weight, 2, ceil_mode=True)
    count = F.avg_pool2d(weight, 2, ceil_mode=True)
    mean = total / count.clamp(min=1e-8)
    return mean, (count > 0).float()


def harmonic_fill(values: torch.Tensor, known: torch.Tensor, steps: int = JACOBI_STEPS
                  ) -> torch.Tensor:
    """values (N, C, H, W) where known (1, 1, H, W) is 1; elsewhere the smooth (harmonic)
    interpolation of the known values: Laplace's equation solved coarse to fine (a pyramid of
    masked means, each level's solution the start of the next finer one's Jacobi sweeps).
    Known values are returned unchanged."""
    known = (known > 0.5).float()
    if float(known.sum()) == 0:
        return torch.zeros_like(values)
    h, w = values.shape[-2:]
    if max(h, w) <= COARSEST or bool(known.all()):
        guess = (values * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True)
        u = torch.where(known > 0, values, guess.expand_as(values))
    else:
        small_v, small_k = _down(values, known)
        small = harmonic_fill(small_v, small_k, steps)
        u = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        u = torch.where(known > 0, values, u)
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
