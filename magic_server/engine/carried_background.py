"""The background a loose selection carries, lifted off the moved object.

An artist's lasso round a dandelion seed on bokeh holds the seed and a polygon of the bokeh it
stood on. Pasted at the new place, that polygon shows at 100 % as a darker shape with straight
edges: the old bokeh inside, the new one round it. Here the pasted layer is split into the
object and the background it carries, and the carried background is swapped for the new one:

- the carried background: the smooth pixels of the paste (no detail above SMOOTH_DETAIL),
  coloured like what surrounded the object where it was, and joined to the selection's border
  through such pixels (an object's own edge or colour separates its inside from the border, so
  a smooth object stays whole, and so does a cup whose white rim the selection runs along);
- behind the object, the old background is their harmonic interpolation (`old`), and each
  pixel's share of object (alpha) grows with how far it stands from that: thin hairs and their
  soft edges keep what they add to the background, a solid object all of itself;
- the result is the paste with its old background replaced by the new one, `new` (the finish's
  membrane of the new surroundings): paste + (1 - alpha) (new - old), faded in from the border.

It acts only for a selection whose outline runs through smooth background, the photo the same
just inside and just outside it (loose_on_smooth): there is no telling a white shuttle from the
white wall it was selected on, so a mask drawn on an object's edges lifts nothing. What is
textured carries no smooth pixels and stays as pasted too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from magic_server.engine.components import connected_regions
from magic_server.engine.membrane import gaussian_blur, harmonic_fill
from magic_server.engine.regions import dilate

SMOOTH_DETAIL = 4.0 / 255  # detail (a pixel against its 1.5 px blur) of smooth background
BORDER_COLOUR = 24.0 / 255  # background is within this of a colour on the selection's border
ALPHA_FROM, ALPHA_FULL = 2.0 / 255, 60.0 / 255  # distance to the old background: object share
FEATHER = 6  # px: the swap fades in over this far from the selection's outline
OUTLINE = 2  # px: on the outline the new background is taken whole, fading over this far
NEAR = 3  # px at the classifying size: how far from the background found it may act
CLASSIFY_SIDE = 512  # the background is found on a copy at most this large (speed)
BORDER_SAMPLES = 256
CONTINUOUS = 6  # levels: the photo just inside and just outside an outline pixel alike
# share of such outline pixels: nothing lifted .. all. Measured: twowings' lasso through bokeh
# 0.70; yellowflower's round a soft petal coloured like its neighbours 0.47 (lifting there ate
# into the petal: left alone); every bundled mask and garden, raindrops, hummingbird 0.24 or less
LOOSE_FROM, LOOSE_FULL = 0.55, 0.65
COMMON_COLOUR = 16  # of them, this many must be near a colour for it to count as theirs


@dataclass(frozen=True)
class CarriedBackground:
    """What a selection carried of the background round the object: its colours (K, 3) in
    [0, 1], and how much of it to lift (0: nothing, 1: all; the share of the selection's
    outline that runs through smooth background, see loose_on_smooth)."""

    colours: np.ndarray
    strength: float


def carried_background(photo: np.ndarray, mask: np.ndarray) -> CarriedBackground | None:
    """The background the source `mask` (H, W bool) carries in the photo (HxWx3 uint8), or
    None when its outline runs on the object's edges or through texture (nothing to lift)."""
    strength = loose_on_smooth(photo, mask)
    if strength <= 0:
        return None
    return CarriedBackground(surrounding_colours(photo, mask), strength)


def loose_on_smooth(photo: np.ndarray, mask: np.ndarray) -> float:
    """In [0, 1]: how surely the selection is a loose lasso through smooth background. For
    each outline pixel, the photo's mean just inside (2-5 px) and just outside (2-5 px) it,
    near it (11 px): the same within CONTINUOUS levels where the background simply continues
    across the outline, apart on an object's edge or in texture. The share of such pixels,
    from LOOSE_FROM (0) to LOOSE_FULL (1): a lasso through bokeh round a seed has 0.7, a mask
    drawn on a cup, a shuttle or a bird 0.2 or less, one round a soft petal among petals 0.47
    (nothing lifted: its smooth inside is coloured like its surroundings)."""
    m = mask.astype(bool)
    outline = m & dilate(~m, 1)
    if not outline.any() or m.all():
        return 0.0
    image = torch.from_numpy(photo.astype(np.float32)).permute(2, 0, 1)[None]

    def local_mean(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weight = torch.from_numpy(band.astype(np.float32))[None, None]
        total = F.avg_pool2d(image * weight, 11, stride=1, padding=5)
        count = F.avg_pool2d(weight, 11, stride=1, padding=5)
        mean = total / count.clamp(min=1e-6)
        return mean[0].permute(1, 2, 0).numpy()[outline], count[0, 0].numpy()[outline] > 0

    inside, has_in = local_mean(m & ~dilate(~m, 2) & dilate(~m, 5))
    outside, has_out = local_mean(~m & ~dilate(m, 2) & dilate(m, 5))
    both = has_in & has_out
    if not both.any():
        return 0.0
    share = float((np.abs(inside - outside).max(-1)[both] < CONTINUOUS).mean())
    return min(1.0, max(0.0, (share - LOOSE_FROM) / (LOOSE_FULL - LOOSE_FROM)))


def surrounding_colours(photo: np.ndarray, mask: np.ndarray, inner: int = 2, outer: int = 6
                        ) -> np.ndarray:
    """(K, 3) float colours in [0, 1] of the photo round the source mask (a ring from `inner`
    to `outer` px outside it), at most BORDER_SAMPLES of them: what a loose selection's
    background looks like."""
    ring = dilate(mask, outer) & ~dilate(mask, inner)
    colours = photo[ring].astype(np.float32) / 255
    step = max(1, len(colours) // BORDER_SAMPLES)
    return colours[::step]


def lift_carried_background(paste: torch.Tensor, selection: torch.Tensor, new: torch.Tensor,
                            surroundings: np.ndarray, strength: float = 1.0) -> torch.Tensor:
    """paste (N, 3, H, W) in [0, 1]: the image with the pasted object; selection (1, 1, H, W):
    where it was pasted (1); new (N, 3, H, W): the new background there; surroundings (K, 3):
    the colours round the object where it was (surrounding_colours). Returns the paste with
    the background it carried replaced by `new` (`strength` of the change)."""
    if strength <= 0 or not bool((selection > 0).any()) or not len(surroundings):
        return paste
    samples = torch.from_numpy(np.ascontiguousarray(surroundings)).to(paste)
    found = old_background(paste[:1], selection, samples)
    if found is None:
        return paste
    old, near, filled = found
    # the coarse estimate's bias, measured where it is background: what the old background
    # differs from it by, smoothed, so that the swap leaves no step against the new one
    where = (near > 0.99).float() * (selection > 0).float()
    factor = classify_factor(paste)
    sigma = 1.5 * factor
    counted = gaussian_blur(where, sigma)
    bias = gaussian_blur((paste - old) * where, sigma) / counted.clamp(min=1e-3)
    old = old + bias * (counted > 1e-3).float()
    distance = (paste - old).abs().amax(1, keepdim=True)
    alpha = ((distance - ALPHA_FROM) / (ALPHA_FULL - ALPHA_FROM)).clamp(0, 1)
    # towards the outline everything is swapped: hairs the lasso cut fade out there
    # (at least the border the background was seeded from: there it is background)
    ramp = inside_ramp(filled, max(FEATHER, 3 * factor))
    # (only next to the background found: where the outline runs on the object, it stays)
    weight = near * (selection > 0).float() * strength
    lifted = paste + (1 - alpha * ramp) * weight * (new - old)
    # on the outline itself the new background exactly: the old one's estimate is coarse there
    edge = (1 - inside_ramp(filled, OUTLINE)) * weight
    return lifted + edge * (new - lifted)


def old_background(paste: torch.Tensor, selection: torch.Tensor, samples: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(the old background behind the paste; how near each pixel is to the background found,
    1 on it fading to 0 NEAR away: a solid object's inside is no background's; the selection
    with its holes and slits filled), all at full size; None when no background is found."""
    h, w = paste.shape[-2:]
    factor = classify_factor(paste)
    small = F.avg_pool2d(paste, factor, ceil_mode=True) if factor > 1 else paste
    inside = (F.avg_pool2d(selection, factor, ceil_mode=True) > 0.999).float() \
        if factor > 1 else (selection > 0).float()
    if not bool(inside.any()):
        return None
    # the border is the selection's outline, not the edges of holes or slits in it (pixels a
    # paste left as they were)
    filled = without_holes(erode(F.max_pool2d(inside, 5, stride=1, padding=2), 2))
    border = filled * (1 - erode(filled, 2)) * inside
    smooth = smooth_inside(paste, (selection > 0).float())
    if factor > 1:  # a small pixel is smooth when nearly all of its pixels are
        smooth = (F.avg_pool2d(smooth, factor, ceil_mode=True) > 0.9).float()
    background = carried(small, inside * smooth, border, samples)
    if background is None:
        return None
    old = harmonic_fill(small, torch.maximum(border, background))
    # 1 within NEAR of it, fading to 0 at twice that
    near = (2 * F.avg_pool2d(F.max_pool2d(background, 2 * NEAR + 1, stride=1, padding=NEAR),
                             2 * NEAR + 1, stride=1, padding=NEAR)).clamp(max=1)
    if factor > 1:
        old, near, filled = (F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
                             for t in (old, near, filled))
    return old, near, torch.maximum((selection > 0).float(), (filled > 0.5).float())


def classify_factor(image: torch.Tensor) -> int:
    """How much smaller the copy the background is found on is (CLASSIFY_SIDE)."""
    return max(1, math.ceil(max(image.shape[-2:]) / CLASSIFY_SIDE))


def smooth_inside(image: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """1 where the image inside the selection has no detail above SMOOTH_DETAIL (judged at
    the photo's own size: a smooth gradient's curvature grows on a smaller copy)."""
    # the blur counts only pixels inside: the paste's step to what lies outside is no detail
    blurred = gaussian_blur(image * inside, 1.5) / gaussian_blur(inside, 1.5).clamp(min=1e-3)
    detail = (image - blurred).abs().amax(1, keepdim=True) * inside
    detail = gaussian_blur(detail, 1.0) / gaussian_blur(inside, 1.0).clamp(min=1e-3)
    return (detail < SMOOTH_DETAIL).float() * inside


def carried(image: torch.Tensor, smooth: torch.Tensor, border: torch.Tensor,
            samples: torch.Tensor) -> torch.Tensor | None:
    """The smooth pixels (`smooth`, inside the selection) coloured like the object's old
    surroundings (`samples`) and joined through such pixels to the selection's border,
    (1, 1, h, w) float, or None. An object's own smooth parts differ from its surroundings
    or lie behind its edge: they stay."""
    smooth = erode(smooth, 1)
    pixels = image[0].permute(1, 2, 0).reshape(-1, 3)
    # the k-th nearest: a colour the surroundings show often, not one stray highlight's
    k = min(len(samples), COMMON_COLOUR)
    near = torch.cat([torch.cdist(chunk, samples).topk(k, dim=1, largest=False).values[:, -1]
                      for chunk in pixels.split(65536)])
    alike = (near.view(1, 1, *image.shape[-2:]) < BORDER_COLOUR * math.sqrt(3)).float()
    candidates = (smooth * alike)[0, 0].cpu().numpy() > 0
    if not candidates.any():
        return None
    regions, _ = connected_regions(candidates.astype(np.int8))
    touching = np.unique(regions[candidates & (border[0, 0].cpu().numpy() > 0)])
    found = candidates & np.isin(regions, touching)
    if not found.any():
        return None
    return torch.from_numpy(found.astype(np.float32)).to(image.device)[None, None]


def without_holes(mask: torch.Tensor) -> torch.Tensor:
    """The mask with every hole filled: what is not joined to the image's edge by pixels
    outside it is inside."""
    outside = mask[0, 0].cpu().numpy() == 0
    regions, _ = connected_regions(outside.astype(np.int8))
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    holes = outside & ~np.isin(regions, edge)
    filled = mask[0, 0].cpu().numpy() > 0
    return torch.from_numpy((filled | holes).astype(np.float32)).to(mask.device)[None, None]


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return 1 - F.max_pool2d(1 - mask, 2 * radius + 1, stride=1, padding=radius)


def inside_ramp(selection: torch.Tensor, width: int) -> torch.Tensor:
    """0 on the selection's border rising to 1 `width` px inside it (the mean of its erosions)."""
    inside = (selection > 0).float()
    total = torch.zeros_like(inside)
    for _ in range(width):
        inside = erode(inside, 1)
        total = total + inside
    return total / width
