"""The last step of a product edit: the synthesized region at the photo's own size.

The pyramid's finest level is capped (512 px for `draft`, 1024 for `quality`), so on a
full-size photo the last level is smaller than the region it fills. Upsampling it as a picture
gave what an artist sees at 100 %: the outline of a coarse level as a staircase, the fill's
tone stepping where it meets the photo, and texture blurred to a smear. Here instead:

1. detail: the last level's patch match field says, for every patch of the fill, which patch
   of the photo it copies. Scaled to the photo's size, those same places vote overlapping
   full-size patches of the photo's own pixels; their fine detail (above the level's
   resolution) is added to the upsampled result, whose coarser layout the optimisation chose.
2. tone: the fill is fused into what surrounds it in the gradient domain (Poisson): the result
   equals what stays (the photo, the artist's pasted object) outside the fill and keeps the
   fill's differences between neighbouring pixels inside it, each clipped to the sharpest
   edge of the surroundings, so it meets them without a step and a staircase or tone step
   inside it becomes a ramp while texture stays. Edge-aware: a pair of neighbours across an
   edge the fill drew, one the surroundings show too (a suit's border on a black table),
   holds its difference loosely, so each side is corrected from its own stretch of the
   boundary and neither side's tone crosses the edge.
3. where: what is synthesized is decided at the photo's own size (`free`), not by an upsampled
   coarse mask, so no pixel outside it changes and its outline is the mask's own.
4. smooth surroundings (bokeh, sky; judged locally): the fill there is the background
   continued smoothly from what stays round it (harmonic interpolation, the new object's
   pixels no boundary value, nor a textured pixel among them) plus a grain like the photo's,
   not the level's copied blocks. That interpolation does not run across a strong outline
   the level drew (membrane.Guide): where a selection took the top of a bud, the bud's top
   as the synthesis drew it stays cream and the bokeh above it stays bokeh, not a gradient
   from one to the other; block edges of the level's bokeh are too faint to hold it back.
5. the artist's paste (a moved layer, or the object a masks-only move carried over): first
   the background is finished alone, continued under the object; then the paste is cloned
   into it (Poisson cloning: its own differences kept, its tone step to the new background
   spread inside it), so the band round the object is the new background's and nothing of
   the paste's old background leaks out as a halo. Where the artist's selection was drawn on
   the object's own edge (selection_tightness), that edge is the object's and is kept.
   Before that, the smooth background a loose selection carried inside the paste is replaced
   by the new one (engine/carried_background.py): no polygon of the old bokeh round the object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from magic_server.engine.carried_background import (
    CarriedBackground,
    erode,
    lift_carried_background,
)
from magic_server.engine.membrane import (
    COARSEST,
    JACOBI_STEPS,
    Guide,
    gaussian_blur,
    harmonic_fill,
    neighbours,
    weighted_sweeps,
)
from magic_server.engine.regions import Box, bounding_box


def edge_limit(image: torch.Tensor, where: torch.Tensor, quantile: float = 0.99) -> torch.Tensor:
    """(1, C, 1, 1): the `quantile` of the absolute differences between neighbouring pixels of
    `image` (N, C, H, W) at the pixels `where` (1, 1, H, W) is 1, per channel: how sharp an
    edge the surroundings show."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs()[:1]
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs()[:1]
    wy = (where[..., 1:, :] * where[..., :-1, :]) > 0.5
    wx = (where[..., :, 1:] * where[..., :, :-1]) > 0.5
    out = []
    for c in range(image.shape[1]):
        values = torch.cat([dy[0, c][wy[0, 0]], dx[0, c][wx[0, 0]]])
        if values.numel() == 0:
            out.append(torch.tensor(1.0, device=image.device))
            continue
        k = max(1, min(values.numel(), round(quantile * values.numel())))
        out.append(values.float().kthvalue(k).values)
    return torch.stack(out).view(1, -1, 1, 1)


def grown_tiles(h: int, w: int, tile: int, count: Callable[[int, int, int, int], int],
                min_count: int) -> Iterator[tuple[int, int, tuple[int, int, int, int]]]:
    """For each tile (i, j) of `tile` px of an h x w image: the window (top, left, bottom,
    right) of the tile grown by half a tile, the growth doubling until `count(window)` reaches
    `min_count`. Tiles whose window never does (even the whole image) are left out: they
    take the overall figure."""
    for i in range(math.ceil(h / tile)):
        for j in range(math.ceil(w / tile)):
            reach = max(1, tile // 2)
            while True:
                window = (max(0, i * tile - reach), max(0, j * tile - reach),
                          min(h, (i + 1) * tile + reach), min(w, (j + 1) * tile + reach))
                found = count(*window)
                if found >= min_count or window == (0, 0, h, w):
                    break
                reach *= 2
            if found >= min_count:
                yield i, j, window


def local_edge_limit(image: torch.Tensor, where: torch.Tensor, tile: int,
                     quantile: float = 0.99, min_count: int = 200) -> torch.Tensor:
    """(1, C, H, W): edge_limit judged near each pixel: per tile of `tile` px, the quantile of
    the differences at the pixels of `where` within the tile grown by half a tile (doubling
    until `min_count` of them are found; none: over all of `where`), interpolated between
    the tiles' centres. A fill beside a smooth saucer may not draw an edge as sharp as the
    cup's rim elsewhere in the ring."""
    return local_edge_limits(image, where, tile, (quantile,), min_count)[0]


def local_edge_limits(image: torch.Tensor, where: torch.Tensor, tile: int,
                      quantiles: tuple[float, ...], min_count: int = 200
                      ) -> list[torch.Tensor]:
    """local_edge_limit at each of `quantiles`, the tiles' differences gathered once."""
    h, w = image.shape[-2:]
    c = image.shape[1]
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs()[0]
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs()[0]
    wy = ((where[..., 1:, :] * where[..., :-1, :]) > 0.5)[0, 0]
    wx = ((where[..., :, 1:] * where[..., :, :-1]) > 0.5)[0, 0]
    gh, gw = math.ceil(h / tile), math.ceil(w / tile)
    # tiles with too few: the overall limit
    grids = [edge_limit(image, where, q).reshape(c, 1, 1).repeat(1, gh, gw) for q in quantiles]

    def pairs(top: int, left: int, bottom: int, right: int) -> int:
        return (int(wy[top : bottom - 1, left:right].sum())
                + int(wx[top:bottom, left : right - 1].sum()))

    for i, j, (top, left, bottom, right) in grown_tiles(h, w, tile, pairs, min_count):
        my, mx = wy[top : bottom - 1, left:right], wx[top:bottom, left : right - 1]
        values = torch.cat([dy[:, top : bottom - 1, left:right][:, my],
                            dx[:, top:bottom, left : right - 1][:, mx]], dim=1).float()
        for grid, q in zip(grids, quantiles):
            k = max(1, min(values.shape[1], round(q * values.shape[1])))
            grid[:, i, j] = values.kthvalue(k, dim=1).values
    out = []
    for grid in grids:
        full = F.interpolate(grid[None], size=(gh * tile, gw * tile), mode="bilinear",
                             align_corners=False)
        out.append(full[..., :h, :w].contiguous())
    return out


# poisson_fuse: a pair of neighbours whose wanted difference is this large (about 13 levels)
# holds it half as firmly as a pair within a smooth stretch
EDGE_SOFTNESS = 0.05


def poisson_fuse(fill: torch.Tensor, around: torch.Tensor, free: torch.Tensor,
                 limit: torch.Tensor, steps: int = JACOBI_STEPS, margin: int = 0,
                 edge_max: torch.Tensor | None = None,
                 continuous: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient-domain compositing with the fill's gradients limited: the image that equals
    `around` outside `free` and whose differences between neighbouring pixels inside `free`
    are the fill's, each clipped to `limit` ((1, C, 1, 1) or (1, C, H, W); a tone step or
    a staircase sharper than any edge of the surroundings becomes a ramp, texture within
    that range is kept). The fill's differences within `margin` px of the edge of `free` are
    not kept either (an upsampled fill blends what stays into its rim), except where
    `continuous` (1, 1, H, W) is at least 0.5: there the fill already meets what stays (the
    smooth surroundings' membrane, made from it), and an edge it draws up to the rim (a
    bud's outline) stays an edge instead of a gap the rim's tone flows through. Solved coarse to
    fine: each level's solution, upsampled, starts the Jacobi sweeps of the next finer one
    (at half size a step of the same height spans half the pixels, so the limit doubles); what
    a coarser level hands on is its correction of the fill, smooth, not its picture, whose
    edges upsampled would smear across the fill's own.

    edge_max (optional, shaped like `limit`): the sharpest difference the surroundings show
    near each pixel (local_edge_limit at quantile 1). With it, each pair of neighbours holds
    its wanted difference as firmly as that difference is small (edge_weight): where the
    fill drew an edge the surroundings also have near it, however rare there (an orange
    suit's border on a black table), the pair holds it loosely and its own, unclipped
    difference counts, so a tone mismatch is corrected on each side from that side's own
    stretch of the boundary instead of spreading across the edge (the black stays black); a
    step sharper than any there is no edge of this part of the photo and holds like the
    ramp its clip makes of it (a sharp line elsewhere in the ring lets no tone step
    through the smooth side of a fill)."""
    h, w = fill.shape[-2:]
    if max(h, w) > COARSEST and not bool((free > 0.5).all()):
        fill_small = F.avg_pool2d(fill, 2, ceil_mode=True)
        small = poisson_fuse(fill_small, F.avg_pool2d(around, 2, ceil_mode=True),
                             F.max_pool2d(free, 2, ceil_mode=True),
                             _halve(limit) * 2, steps, (margin + 1) // 2,
                             None if edge_max is None else _halve(edge_max),
                             None if continuous is None
                             else F.avg_pool2d(continuous, 2, ceil_mode=True))
        u = fill + F.interpolate(small - fill_small, size=(h, w), mode="bilinear",
                                 align_corners=False)
    else:
        u = fill
    inside = free > 0.5
    u = torch.where(inside, u, around)
    fills = neighbours(fill)
    # one limit per pair of neighbours, the same seen from either side (the smaller of the
    # two pixels'): limits that differ between a pixel and its neighbour would ask for
    # differences that add up to no image and leave a bright or dark line where they meet
    limits = ([limit] * 4 if limit.shape[-1] == 1
              else [torch.minimum(limit, n) for n in neighbours(limit)])
    # the wanted difference between a pixel and each neighbour: the fill's, clipped, and none
    # across the edge of `free` (the fill's jump to what stays is what the membrane removes)
    kept = inside.float()
    if margin > 0:
        rim = erode(kept, margin)
        if continuous is not None:
            rim = torch.maximum(rim, kept * (continuous >= 0.5).float())
        kept = rim
    frees = [n * kept for n in neighbours(kept)]
    wanted = [torch.minimum(torch.maximum(fill - f, -lim), lim) * n
              for f, lim, n in zip(fills, limits, frees)]
    if edge_max is None:  # every pair holds alike: no weights to multiply in each sweep
        for _ in range(steps):
            total = sum(n + d for n, d in zip(neighbours(u), wanted))
            u = torch.where(inside, total / 4, around)
        return u
    weights = [edge_weight(fill - f, d, n, edge_max) for f, d, n in zip(fills, wanted, frees)]
    return weighted_sweeps(u, inside, around, weights, steps, wanted)


def edge_weight(raw: torch.Tensor, wanted: torch.Tensor, kept: torch.Tensor,
                edge_max: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W): how firmly a pair of neighbours holds its wanted difference in
    poisson_fuse, 1 / (1 + (size / EDGE_SOFTNESS)^2) of its largest channel. raw: the fill's
    own difference; wanted: as clipped; kept: 1 where the pair keeps the fill's difference at
    all (elsewhere it holds firmly: 1). A difference no larger than edge_max counts as the
    fill drew it, a larger one as clipped."""
    drawn = raw.abs()
    size = torch.where(drawn <= edge_max, drawn, wanted.abs()).amax(1, keepdim=True)
    return torch.where(kept > 0, 1 / (1 + (size / EDGE_SOFTNESS) ** 2), torch.ones_like(size))


def _halve(limit: torch.Tensor) -> torch.Tensor:
    if limit.shape[-1] == 1:
        return limit
    return F.max_pool2d(limit, 2, ceil_mode=True)


def ring(free: torch.Tensor, width: int = 1) -> torch.Tensor:
    """(1, 1, H, W) float: pixels outside `free` within `width` px of it."""
    grown = F.max_pool2d(free, 2 * width + 1, stride=1, padding=width)
    return grown * (1 - free)


def displacement(field: torch.Tensor, level_size: tuple[int, int], patch: int) -> torch.Tensor:
    """(N, 2, h, w) per-pixel displacement (level px) from a match field (N, 2, gh, gw) of
    patch top-left positions: the pixel at the centre of a patch moves as its patch does."""
    gh, gw = field.shape[-2:]
    grid = torch.stack(torch.meshgrid(torch.arange(gh, device=field.device),
                                      torch.arange(gw, device=field.device),
                                      indexing="ij")).float()
    moved = field - grid
    r = patch // 2
    h, w = level_size
    return F.pad(moved, (r, w - gw - r, r, h - gh - r), mode="replicate")


def vote(photo: torch.Tensor, moves: torch.Tensor, window: int,
         origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Full-size patch votes: photo (1, 3, H, W); moves (N, 2, h, w) integer displacement of
    the patch centred at each pixel of a window of the photo whose top-left is `origin`. Every
    pixel of the window takes the mean, over the patches of side `window` that cover it, of
    the photo pixel its patch puts there."""
    n, _, h, w = moves.shape
    big_h, big_w = photo.shape[-2:]
    flat = photo.reshape(3, big_h * big_w)
    ys = torch.arange(h, device=photo.device).view(1, h, 1) + origin[0]
    xs = torch.arange(w, device=photo.device).view(1, 1, w) + origin[1]
    r = window // 2
    padded = F.pad(moves.float(), (r, r, r, r), mode="replicate").long()
    total = torch.zeros(n, 3, h, w, device=photo.device)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            # the patch centred at (y + dy, x + dx) moves by m; it puts photo[p + m] at p
            m = padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            sy = (ys + m[:, 0]).clamp(0, big_h - 1)
            sx = (xs + m[:, 1]).clamp(0, big_w - 1)
            index = (sy * big_w + sx).view(n, -1)
            total += flat[:, index].permute(1, 0, 2).reshape(n, 3, h, w)
    return total / (window * window)


MAX_VOTE_WINDOW = 9


def _level_rows(count: int, start: int, full: int, level: int, device) -> torch.Tensor:
    """The level row (or column) under each of `count` full-size rows from `start`."""
    rows = torch.arange(start, start + count, device=device).float()
    return ((rows + 0.5) * level / full).floor().long().clamp(0, level - 1)


def full_size_detail(photo: torch.Tensor, field: torch.Tensor, level_size: tuple[int, int],
                     patch: int, window: Box) -> torch.Tensor | None:
    """The photo's own detail where the last level's matches point, at the photo's size, in
    `window` of the region: photo (1, 3, H, W) pixels of the whole region (where votes come
    from); field the last level's match field. Returns the high-pass part (N, 3, h, w) of the
    full-size votes (what the level could not resolve), or None when the level already had
    the region's size."""
    big_h, big_w = photo.shape[-2:]
    sy, sx = big_h / level_size[0], big_w / level_size[1]
    if max(sy, sx) < 1.2:
        return None
    moves = displacement(field, level_size, patch)
    rows = _level_rows(window.height, window.top, big_h, level_size[0], photo.device)
    cols = _level_rows(window.width, window.left, big_w, level_size[1], photo.device)
    up = moves[:, :, rows][:, :, :, cols]
    up = torch.stack([up[:, 0] * sy, up[:, 1] * sx], dim=1).round().long()
    size = min(MAX_VOTE_WINDOW, 2 * math.ceil(max(sy, sx)) + 1)
    votes = vote(photo, up, size, (window.top, window.left))
    return votes - gaussian_blur(votes, 0.6 * max(sy, sx))


def upsample_window(images: torch.Tensor, full: tuple[int, int], window: Box) -> torch.Tensor:
    """The part `window` of images (N, C, h, w) bicubically upsampled to `full` (H, W), without
    upsampling the rest."""
    n = images.shape[0]
    dev = images.device
    ys = (torch.arange(window.top, window.bottom, device=dev).float() + 0.5) * 2 / full[0] - 1
    xs = (torch.arange(window.left, window.right, device=dev).float() + 0.5) * 2 / full[1] - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].expand(n, -1, -1, -1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="border",
                         align_corners=False)


EDGE_TILES = 4  # finish_region: the edge limit is judged per tile of this many ring widths
SMOOTH_BELOW = 1.5 / 255  # surroundings this smooth (bokeh, sky) get a smooth fill ...
TEXTURED_ABOVE = 3.0 / 255  # ... and these textured ones the synthesis' own (between: a mix)
NEAR_PRIOR = 0.05  # smooth_share: how much of `where` near counts as judged locally


def tile_medians(values: torch.Tensor, where: torch.Tensor, tile: int,
                 min_count: int = 200) -> torch.Tensor:
    """(1, 1, ceil(H / tile), ceil(W / tile)): per tile of `tile` px, the median of `values`
    (1, 1, H, W) at the pixels `where` (1, 1, H, W) is 1 within the tile grown by half a tile
    (doubling until `min_count` of those pixels are found; none: over all of `where`)."""
    h, w = values.shape[-2:]
    v, m = values[0, 0].float(), where[0, 0] > 0.5
    everywhere = v[m]
    overall = float(everywhere.median()) if everywhere.numel() else 0.0
    gh, gw = math.ceil(h / tile), math.ceil(w / tile)
    grid = torch.full((1, 1, gh, gw), overall, device=values.device)

    def pixels(top: int, left: int, bottom: int, right: int) -> int:
        return int(m[top:bottom, left:right].sum())

    for i, j, (top, left, bottom, right) in grown_tiles(h, w, tile, pixels, min_count):
        grid[0, 0, i, j] = v[top:bottom, left:right][m[top:bottom, left:right]].median()
    return grid


def fine_detail(photo: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W): how far each pixel of the photo (1, 3, H, W) stands from its 2 px blur,
    averaged over the channels: what smooth_share and smooth_boundary judge."""
    return (photo - gaussian_blur(photo, 2.0)).abs().mean(1, keepdim=True)


def smooth_share(photo: torch.Tensor, where: torch.Tensor, reach: float,
                 edges_are_lines: bool = False, detail: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """(1, 1, H, W) in [0, 1]: how smooth the photo (1, 3, H, W) is near each pixel, from its
    fine detail on the pixels `where` (1, 1, H, W) is 1 within about `reach` px: 1 below
    SMOOTH_BELOW (bokeh, sky), 0 above TEXTURED_ABOVE, a ramp between. Local, so a fill
    between bokeh and a textured object is smooth where the bokeh is and the synthesis' own
    next to the texture. Pixels with little of `where` near lean to the mean over all of it.
    edges_are_lines: the detail near a pixel is the median over `where` (tile_medians), not
    the mean, so that an object's edge or highlight in `where` (a cup's rim and foot beside
    a smooth saucer) is a line or a spot, not texture: the saucer is judged smooth and a
    spoon's old place on it is the saucer continued, not a shape with a hard edge copied from
    under the cup. Texture is detail nearly everywhere, so its median is high. detail: the
    photo's fine_detail, when the caller has it already."""
    h, w = photo.shape[-2:]
    if detail is None:
        detail = fine_detail(photo)
    if not edges_are_lines:
        share = _ramp(_near_mean(detail, where, reach))
        return F.interpolate(share, size=(h, w), mode="bilinear", align_corners=False)
    tile = max(4, int(reach // 2))
    # the share per tile, softened over a tile and interpolated: the detail itself,
    # interpolated, crossed the ramp within a pixel between textured and smooth tiles
    share = gaussian_blur(_ramp(tile_medians(detail, where, tile)), 0.5)
    full = F.interpolate(share, scale_factor=tile, mode="bilinear", align_corners=False)
    return full[..., :h, :w].contiguous()


def _ramp(detail: torch.Tensor) -> torch.Tensor:
    """1 below SMOOTH_BELOW, 0 above TEXTURED_ABOVE, linear between."""
    return ((TEXTURED_ABOVE - detail) / (TEXTURED_ABOVE - SMOOTH_BELOW)).clamp(0, 1)


def _near_mean(detail: torch.Tensor, where: torch.Tensor, reach: float) -> torch.Tensor:
    """The mean of `detail` over `where` within about `reach` px, at a pooled size."""
    detail = detail * where
    factor = max(1, int(reach // 8))
    small_detail = F.avg_pool2d(detail, factor, ceil_mode=True)
    small_where = F.avg_pool2d(where.float(), factor, ceil_mode=True)
    sigma = reach / factor
    near_detail = gaussian_blur(small_detail, sigma)
    near_where = gaussian_blur(small_where, sigma)
    overall = float(detail.sum() / where.sum().clamp(min=1))
    # far from `where` the mean over all of it, blended in smoothly (a switch at a threshold
    # drew the pooled grid's staircase across a large hole's fill)
    return (near_detail + NEAR_PRIOR * overall) / (near_where + NEAR_PRIOR)


def grain_like(photo: torch.Tensor, where: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Noise of `shape` with the spread, per channel, of the photo's finest detail (the photo
    minus its 1 px blur) on the pixels `where` is 1; seeded, so an edit repeats exactly."""
    fine = photo - gaussian_blur(photo, 1.0)
    count = where.sum().clamp(min=1)
    mean = (fine * where).sum((2, 3), keepdim=True) / count
    spread = (((fine - mean) ** 2 * where).sum((2, 3), keepdim=True) / count).sqrt()
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(tuple(shape), generator=gen).to(photo.device)
    return noise * spread


def smooth_boundary(detail: torch.Tensor, known: torch.Tensor, share: torch.Tensor
                    ) -> torch.Tensor:
    """(1, 1, H, W): the pixels of `known` whose values the smooth surroundings' membrane
    continues: where the surroundings are judged smooth (share >= 0.5) and the pixel itself
    has no fine detail (the photo's fine_detail, `detail`) above TEXTURED_ABOVE. A tile judged smooth can hold a few pixels of the
    textured object beside it (a suit's edge next to a black table): as boundary values they
    tinted a removal's black brown, worst where the hole reaches the photo's edge and the
    black round it is a short stretch of the ring (in the test's scene 22-28 levels on
    average, 9-15 without them)."""
    return known * (share >= 0.5).float() * (detail < TEXTURED_ABOVE).float()


def smooth_where_smooth(fill: torch.Tensor, photo: torch.Tensor, structure: torch.Tensor,
                        share: torch.Tensor, judged: torch.Tensor, free: torch.Tensor,
                        keep: torch.Tensor | None) -> torch.Tensor:
    """In smooth surroundings, the background part of the fill is `structure`, their smooth
    (harmonic) interpolation across the fill, plus a grain like theirs. Patch synthesis fills
    bokeh with blocks copied from elsewhere, each of another tone, whose edges show at
    100 %; what the surroundings continue into the hole is what an artist's healing brush
    gives there. share (1, 1, H, W): smooth_share of the surroundings `judged` (the ring
    round the fill); next to textured surroundings the fill is the synthesis' own. `keep`
    (1, 1, H, W): pixels never changed here (the new object)."""
    if float(share.max()) == 0:
        return fill
    # the surroundings are smooth: only a grain like theirs (the photo's own detail voted in
    # can land on the object's old pixels and draw ghosts of its lines into the bokeh: even
    # clipped to 1.5 levels a dandelion's hairs still showed), as noise of their grain's
    # spread there, the same for every run
    # the grain of the surroundings judged smooth (at a share of a few %, a textured suit's
    # detail still set the grain of the black table beside it)
    smooth = structure + grain_like(photo, judged * (share >= 0.5).float(), fill.shape)
    return fill + membrane_weight(share, free, keep) * (smooth - fill)


def membrane_weight(share: torch.Tensor, free: torch.Tensor, keep: torch.Tensor | None
                    ) -> torch.Tensor:
    """(1, 1, H, W): how much of smooth_where_smooth's fill is the smooth membrane."""
    weight = share * free
    return weight if keep is None else weight * (1 - keep)


def selection_tightness(photo: np.ndarray, mask: np.ndarray) -> float:
    """In [0, 1]: whether the outline of `mask` (H, W bool) lies on an edge of the photo
    (HxWx3 uint8), as an artist's selection drawn on the object's edge does (1), or in the
    background round it (0, a loose lasso: what it carries of the background is not the
    object's). The median step across the outline over the median step between neighbours
    just outside it: 2 or less is background, 6 or more an edge."""
    img = photo.astype(np.int16)
    m = mask.astype(bool)
    steps, ring = [], []
    for axis in (0, 1):
        a = np.swapaxes(img, 0, axis)
        k = np.swapaxes(m, 0, axis)
        diff = np.abs(a[1:] - a[:-1]).max(-1)
        across = k[1:] != k[:-1]
        outside = ~k[1:] & ~k[:-1]
        near = np.zeros_like(outside)
        near[:-1] |= across[1:]
        near[1:] |= across[:-1]
        for _ in range(3):  # a few pixels out
            grown = near.copy()
            grown[:-1] |= near[1:]
            grown[1:] |= near[:-1]
            near = grown
        steps.append(diff[across])
        ring.append(diff[near & outside])
    steps, ring = np.concatenate(steps), np.concatenate(ring)
    if steps.size == 0 or ring.size == 0:
        return 0.0
    ratio = float(np.median(steps)) / max(1.0, float(np.median(ring)))
    return min(1.0, max(0.0, (ratio - 2) / 4))


def _tensor(mask: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]


def finish_region(synth: torch.Tensor, photo: np.ndarray, around: np.ndarray, free: np.ndarray,
                  *, field: torch.Tensor | None, patch: int, exact: np.ndarray | None = None,
                  outline: np.ndarray | None = None, tight: float = 0.0,
                  carried: CarriedBackground | None = None,
                  edges_are_lines: bool = True,
                  kept_background: np.ndarray | None = None) -> list[np.ndarray]:
    """The edit's region (H, W) at the photo's own size, one uint8 HxWx3 image per sample.

    synth (N, 3, h, w): the last level's pixels; photo: the region of the photo; around: what
    stays (the photo, with the artist's held object pasted); free (bool): what is synthesized;
    exact: pixels whose fill is `around` itself (the pasted object, fused only at its rim);
    outline: pixels whose edges are the new object's own (never limited); field: the last
    level's match field into the photo (None: the bank was not the photo alone); tight: how
    much the source mask's outline lies on the object's own edge (selection_tightness): that
    share of the paste's step to the new background is kept, the rest spread inside it;
    carried: the background a loose selection carried (carried_background): replaced inside
    the paste by the new one. edges_are_lines: an object's edge round the fill counts as one
    line, not texture, in judging whether the surroundings are smooth (smooth_share); off for
    a layout edit, whose region holds objects the synthesis draws (a moved spoon's handle was
    judged background there and paled). kept_background (bool): free pixels that keep the
    photo's own, untouched by the Poisson solve (round an object's new place, where nothing
    moved from: the new background runs on up to the object); the ring and tiles that judge
    the surroundings are those of the whole of `free`."""
    n = synth.shape[0]
    box = bounding_box(free)
    if box is None:
        return [around.copy() for _ in range(n)]
    h, w = free.shape
    ring_width = max(4, round(0.02 * max(h, w)))
    pad = ring_width + 2
    win = Box(max(0, box.top - pad), max(0, box.left - pad),
              min(h, box.bottom + pad), min(w, box.right + pad))
    device = synth.device
    photo_t = torch.from_numpy(np.ascontiguousarray(photo)).to(device).permute(2, 0, 1)[None]
    photo_t = photo_t.float() / 255
    around_w = torch.from_numpy(np.ascontiguousarray(win.crop(around))).to(device)
    around_w = around_w.permute(2, 0, 1)[None].float() / 255
    photo_w = photo_t[..., win.top : win.bottom, win.left : win.right]
    free_w = _tensor(win.crop(free), device)
    fill = upsample_window(synth.float(), (h, w), win)
    level = fill  # the last level's picture, upsampled: its layout guides the membrane
    level_size = tuple(synth.shape[-2:])
    detail = None
    if field is not None:
        detail = full_size_detail(photo_t, field, level_size, patch, win)
        if detail is not None:
            fill = fill + detail
    scale = max(h, w) / max(level_size)
    exact_w = None if exact is None else _tensor(win.crop(exact), device)
    keep = None if outline is None else _tensor(win.crop(outline), device)
    if exact_w is not None:
        keep = exact_w if keep is None else torch.maximum(keep, exact_w)
    solved = free_w  # what the Poisson solve changes: the photo's own background stays as is
    if kept_background is not None:
        solved = free_w * (1 - _tensor(win.crop(kept_background), device))
    # the background continued from the background alone, under the new object too: the
    # object's pixels are no boundary values (they would smear its colour round it); the
    # photo's own background kept round it is
    known = 1 - solved if keep is None else (1 - solved) * (1 - keep)
    # with a paste, what lies round it (the outline's band) is background like the rest
    held = keep if exact_w is None else exact_w
    surroundings = ring(free_w, ring_width)
    judged = surroundings if held is None else surroundings * (1 - held)
    detail_w = fine_detail(photo_w)
    share = smooth_share(photo_w, judged, 4.0 * ring_width, edges_are_lines, detail_w)
    # the membrane continues the smooth surroundings only: a black table beside an orange
    # suit stays black, not a brown mix of the two (textured parts take the synthesis)
    smooth_known = smooth_boundary(detail_w, known, share)
    # ... and does not run across an outline the synthesis drew in the hole (a bud's top,
    # where a lasso took part of it: not its cream smeared up into the bokeh)
    # an upsampled level blends across its outlines over about two of its pixels: the
    # object's outline, and what stays into the fill's rim
    blend = math.ceil(2 * scale) if scale > 1.2 else 0
    unguided = held
    if held is not None and blend > 0:  # the level drew the object's outline over this
        unguided = F.max_pool2d(held, 2 * blend + 1, stride=1, padding=blend)
    guide = Guide(level.mean(0, keepdim=True), scale, unguided)
    under = harmonic_fill(around_w, smooth_known if bool((smooth_known * judged).any())
                          else known, guide=guide)
    fill = smooth_where_smooth(fill, photo_w, under, share, judged, free_w, held)
    # where the fill is that membrane it meets what stays already
    continuous = membrane_weight(share, free_w, held)
    # the sharpest edge the surroundings show near each pixel: at the 99th percentile the
    # limit a fill's differences are clipped to, the sharpest of all the fusion's edge_max
    limit, edge_max = local_edge_limits(photo_w, surroundings, EDGE_TILES * ring_width,
                                        (0.99, 1.0))
    # there, in the fill's rim, the fill's own differences are not kept
    margin = blend + 1 if blend > 0 else 0
    if keep is not None:  # the new object's own edges are never limited
        limit = torch.where(keep > 0, torch.ones_like(limit), limit)
    if exact_w is None:
        fused = poisson_fuse(fill.clamp(0, 1), around_w.expand_as(fill), solved,
                             limit.contiguous(), margin=margin, edge_max=edge_max,
                             continuous=continuous)
    else:
        # first the background alone, over the object's place too (there the background
        # continued under it: so the margin is kept from what stays only, and the texture
        # runs up to the object); then the artist's paste cloned into it: its pixels'
        # differences kept, its tone step to the new background spread inside it (Poisson
        # cloning), so the band round the object is the background's and nothing of the
        # paste leaks into it
        background = poisson_fuse(torch.where(exact_w > 0, under, fill).clamp(0, 1),
                                  around_w.expand_as(fill), torch.maximum(solved, exact_w),
                                  limit.contiguous(), margin=margin, edge_max=edge_max,
                                  continuous=continuous)
        if carried is not None:
            # the old background a loose selection carried: this new one instead
            around_w = lift_carried_background(around_w, exact_w, background, carried.colours,
                                               carried.strength * (1 - tight))
        stays = torch.where(free_w > 0, background, around_w)
        cloned = poisson_fuse(torch.where(exact_w > 0, around_w, background), stays,
                              free_w * exact_w, torch.ones(1, 3, 1, 1, device=device))
        # a selection drawn on the object's own edge: that edge is the object's and stays
        # (the clone's correction is linear in the step it removes: keep `tight` of it)
        pasted = torch.where(exact_w > 0, around_w, stays)
        fused = cloned + tight * (pasted - cloned)
    pixels = (fused.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for k in range(n):
        image = around.copy()
        image[win.top : win.bottom, win.left : win.right] = pixels[k]
        out.append(image)
    return out
