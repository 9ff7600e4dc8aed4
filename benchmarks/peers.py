"""Hand-made peers for the MAGIC benchmark: what an artist gets without MAGIC.

    from peers import cut_paste, cut_paste_heal, inpaint   # (with benchmarks/ on sys.path)

    cut_paste(image, source, guide, mode=None) -> image      # uint8 HxWx3, bool HxW masks
    cut_paste_heal(image, source, guide, mode=None) -> image
    inpaint(image, hole_mask, *, exclude=None) -> image

`mode` ("move", "copy", "reshape", "remove") may be given when known; without it a removal is
recognised from the masks (the guide adds nothing and nothing is merely shrunk).

- ``cut_paste(image, source, guide)``: the object's pixels carried from where the source mask has
  it to where the guide mask puts it, scaled when the guide resizes it (so reshape works too),
  pasted where the guide is, with a hard edge, as a moved or scaled GIMP layer gives. The old
  place keeps the photo's pixels.
- ``cut_paste_heal(image, source, guide)``: the same, then the uncovered old place (source minus
  guide, grown by 2 px as an artist grows a selection before healing) filled by PatchMatch
  inpainting, which is what Resynthesizer's *Heal selection* does in GIMP. For a removal (the
  guide keeps some whole objects of the source and adds nothing) this is inpainting of the
  removed objects.
- ``inpaint(image, hole_mask)``: PatchMatch inpainting (the ``pypatchmatch`` package, a compiled
  PatchMatch with OpenCV inside; install with ``pip install -e ".[bench]"``).

How the object is found from the two masks alone: the source mask may mark several objects (all
coins, both eyes) and the edited object may touch others (a spoon against its cup), so the
masks' bounding boxes are not the object's. The edit is taken to be one axis-aligned scaling
plus translation T of part of the source (what every move, copy and reshape is). T is the one
under which the source mask best reproduces the guide near the changed pixels (source XOR guide,
grown by 5% of the short side): the agreement of T(source) with the guide there, computed for all
translations at once by FFT cross-correlation, for a grid of per-axis scales 0.5x-2x (coarse on a
small copy, then refined at full size; ties go to the smaller scale change). The object is the
source pixels that T carries into the guide, within the convex hull of the source pixels the edit
moves (those carried onto new guide pixels, and those the guide no longer covers).

Pixels outside the pasted object and the healed hole are the photo's, bit for bit. Every function
is deterministic (PatchMatch runs with a fixed seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HEAL_GROW_PX = 2  # an artist grows the selection a little before healing
PATCH_RADIUS = 3  # PatchMatch patches of 7 x 7 pixels
PM_SEED = 0
RING_PX = 3  # background ring around the new place that the object must not cover
KEPT_WEIGHT = 0.25  # reward for covering kept object pixels near the change (shrinks)
SIZE_PENALTY = 0.02  # per unit of |log scale|, times the kernel's mass: ties keep the size


class PeerError(Exception):
    """The peers cannot be computed (missing package, unusable masks). User-facing message."""


@dataclass(frozen=True)
class Transform:
    """q = (sy * p_y + ty, sx * p_x + tx): a source pixel p's place in the guide."""

    sy: float
    sx: float
    ty: float
    tx: float

    def inverse_points(self, qy: np.ndarray, qx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (qy - self.ty) / self.sy, (qx - self.tx) / self.sx


# ---------------------------------------------------------------------------- mask helpers


def _check(image: np.ndarray, *masks: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PeerError("image must be an HxWx3 uint8 array")
    for m in masks:
        if m.shape != image.shape[:2] or m.dtype != bool:
            raise PeerError(f"masks must be bool arrays of the image's size {image.shape[:2]}, "
                            f"got {m.dtype} {m.shape}")


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    from scipy import ndimage

    if r <= 0:
        return mask.copy()
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(mask, structure=yy * yy + xx * xx <= r * r)


def is_removal(source: np.ndarray, guide: np.ndarray, tol: float = 0.01) -> bool:
    """True when the guide adds nothing and keeps or drops each source object whole."""
    from scipy import ndimage

    if (guide & ~source).sum() > tol * max(1, guide.sum()):
        return False
    labels, n = ndimage.label(source)
    if n == 0:
        return False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    kept = np.bincount(labels[guide].ravel(), minlength=n + 1)[1:]
    frac = kept / np.maximum(sizes, 1)
    return bool(np.all((frac < tol) | (frac > 1 - tol)) and np.any(frac < tol))


def _resize_mask(mask: np.ndarray, sy: float, sx: float) -> np.ndarray:
    """mask scaled about the origin (pixel p goes to about s * p), as float in [0, 1]."""
    from PIL import Image

    h, w = mask.shape
    size = (max(1, round(w * sx)), max(1, round(h * sy)))
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im, np.float32) / 255.0


def _best_translation(kernel: np.ndarray, moved: np.ndarray) -> tuple[float, int, int]:
    """max over t of sum_q kernel(q) * moved(q - t), and that t."""
    from scipy import signal

    c = signal.correlate(kernel, moved, mode="full", method="fft")
    i, j = np.unravel_index(int(np.argmax(c)), c.shape)
    return float(c[i, j]), int(i) - (moved.shape[0] - 1), int(j) - (moved.shape[1] - 1)


def _score_grid(source: np.ndarray, kernel: np.ndarray, scales: list[tuple[float, float]],
                weight: float) -> list[tuple[float, float, float, int, int]]:
    out = []
    for sy, sx in scales:
        moved = _resize_mask(source, sy, sx)
        score, ty, tx = _best_translation(kernel, moved)
        # ties (and near-ties) go to the smaller change of size
        score -= weight * (abs(math.log(sy)) + abs(math.log(sx)))
        # the resize maps pixel centres p + 0.5 to s * (p + 0.5)
        out.append((score, sy, sx, ty + 0.5 * (sy - 1), tx + 0.5 * (sx - 1)))
    return out


def _box_down(mask: np.ndarray, f: int) -> np.ndarray:
    h, w = -(-mask.shape[0] // f) * f, -(-mask.shape[1] // f) * f
    m = np.pad(mask, ((0, h - mask.shape[0]), (0, w - mask.shape[1])))
    return m.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _touching(source: np.ndarray, near: np.ndarray) -> np.ndarray:
    """The source's connected components that touch `near` (all of the source if none do)."""
    from scipy import ndimage

    labels, _ = ndimage.label(source)
    hit = np.unique(labels[near & source])
    hit = hit[hit > 0]
    return np.isin(labels, hit) if len(hit) else source


def _bbox(mask: np.ndarray, grow: int = 0) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (max(0, int(ys.min()) - grow), max(0, int(xs.min()) - grow),
            min(h, int(ys.max()) + 1 + grow), min(w, int(xs.max()) + 1 + grow))


def estimate_transform(source: np.ndarray, guide: np.ndarray) -> Transform:
    """The scaling + translation under which the source best explains the guide's changes."""
    new, vacated = guide & ~source, source & ~guide
    if not (new | vacated).any():
        return Transform(1.0, 1.0, 0.0, 0.0)
    # only the source objects the edit touches can be the one it moves
    obj = _touching(source, _grow(new | vacated, 1))
    margin = max(3, round(0.05 * min(source.shape)))
    ring = _grow(new, RING_PX) & ~guide & ~source
    kernel = new.astype(np.float32) - vacated - ring
    if new.sum() < 0.05 * vacated.sum():  # a shrink, or a removal: reward what stays
        kernel += KEPT_WEIGHT * (guide & source & _grow(vacated, margin))
    # work on crops: the object's box, and the box of where it may land
    oy0, ox0, oy1, ox1 = _bbox(obj)
    ky0, kx0, ky1, kx1 = _bbox(kernel != 0, 1)
    obj_c, ker_c = obj[oy0:oy1, ox0:ox1].astype(np.float32), kernel[ky0:ky1, kx0:kx1]

    def grid(f: int, scales) -> list[tuple[float, float, float, int, int]]:
        o, k = (_box_down(obj_c, f), _box_down(ker_c, f)) if f > 1 else (obj_c, ker_c)
        weight = SIZE_PENALTY * float(np.abs(k).sum())
        # crop coordinates -> full image: q = s * p + t with t = f * t' + k0 - s * o0
        return [(sc, sy, sx, f * ty + ky0 - sy * oy0, f * tx + kx0 - sx * ox0)
                for sc, sy, sx, ty, tx in _score_grid(o, k, scales, weight)]

    # coarse: all per-axis scales 0.5x-2x on copies of about 96 px
    f = max(1, math.ceil(max(*obj_c.shape, *ker_c.shape) / 96))
    steps = np.exp(np.linspace(math.log(0.5), math.log(2.0), 25))
    _, sy0, sx0, _, _ = max(grid(f, [(a, b) for a in steps for b in steps]))
    # fine: around the coarse best, at full size; sizes within a quarter step of 1 snap to 1
    step = math.log(steps[1] / steps[0])
    scales = {(1.0, 1.0)}
    for a in np.linspace(-step, step, 5):
        for b in np.linspace(-step, step, 5):
            sy, sx = sy0 * math.exp(a), sx0 * math.exp(b)
            scales.add((1.0 if abs(math.log(sy)) < step / 4 else float(sy),
                        1.0 if abs(math.log(sx)) < step / 4 else float(sx)))
    _, sy, sx, ty, tx = max(grid(1, sorted(scales)))
    return Transform(sy, sx, ty, tx)


# ---------------------------------------------------------------------------- the peers


@dataclass
class Paste:
    image: np.ndarray  # the photo with the object pasted
    pasted: np.ndarray  # bool: pixels that received the object
    hole: np.ndarray  # bool: the uncovered old place an artist would heal
    transform: Transform | None


def _removal(image: np.ndarray, source: np.ndarray, guide: np.ndarray) -> Paste:
    hole = _grow(source & ~guide, HEAL_GROW_PX) & ~(guide & source)
    return Paste(image.copy(), np.zeros_like(source), hole, None)


def plan_paste(image: np.ndarray, source: np.ndarray, guide: np.ndarray,
               mode: str | None = None, transform: Transform | None = None) -> Paste:
    """cut-paste with its bookkeeping (which pixels were pasted, what is left to heal).
    mode: "remove" forces a removal, "move"/"copy"/"reshape" a paste; None infers it.
    transform: the edit's known transform (a scene that records it), instead of the estimate
    from the masks."""
    _check(image, source, guide)
    if not source.any():
        raise PeerError("the source mask is empty")
    if mode == "remove" or not guide.any() or (mode is None and is_removal(source, guide)):
        return _removal(image, source, guide)
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    t = transform if transform is not None else estimate_transform(source, guide)
    shrink = t.sy <= 1 and t.sx <= 1 and t.sy * t.sx < 0.97
    if mode is None and (guide & ~source).sum() < 0.01 * guide.sum() and not shrink:
        return _removal(image, source, guide)  # nothing added and nothing shrunk: removed
    out = image.copy()
    h, w = source.shape
    qy, qx = np.nonzero(guide)
    py, px = t.inverse_points(qy.astype(np.float64), qx.astype(np.float64))
    iy, ix = np.rint(py).astype(np.int64), np.rint(px).astype(np.int64)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    new_pixels = guide & ~source
    carried_to_new = np.zeros_like(source)
    sel = inside & new_pixels[qy, qx]
    carried_to_new[iy[sel], ix[sel]] = True
    seeds = (carried_to_new | (source & ~guide)) & source
    hull = convex_hull_image(seeds) if seeds.sum() >= 3 else seeds
    obj = source & hull
    take = np.zeros(len(qy), bool)
    take[inside] = obj[iy[inside], ix[inside]]
    if t.sy == 1.0 and t.sx == 1.0 and float(t.ty).is_integer() and float(t.tx).is_integer():
        vals = image[iy[take], ix[take]]
    else:
        coords = np.stack([py[take], px[take]])
        vals = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float32), coords,
                                                 order=3, mode="nearest")
                         for c in range(3)], -1)
        vals = np.clip(np.rint(vals), 0, 255).astype(np.uint8)
    pasted = np.zeros_like(source)
    pasted[qy[take], qx[take]] = True
    out[qy[take], qx[take]] = vals
    hole = _grow(source & ~guide & ~pasted, HEAL_GROW_PX) & ~pasted & ~(guide & source)
    return Paste(out, pasted, hole, t)


def cut_paste(image: np.ndarray, source: np.ndarray, guide: np.ndarray,
              mode: str | None = None, transform: Transform | None = None) -> np.ndarray:
    """The object carried (and scaled) from the source onto the guide; the old place untouched.
    For a removal there is nothing to paste: the photo."""
    return plan_paste(image, source, guide, mode, transform).image


def heal(paste: Paste, source: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """Fill paste.hole by PatchMatch from the background (never from the objects of the source
    or guide masks, nor from the pasted object)."""
    if not paste.hole.any():
        return paste.image.copy()
    return inpaint(paste.image, paste.hole,
                   exclude=(source | guide | paste.pasted) & ~paste.hole)


def cut_paste_heal(image: np.ndarray, source: np.ndarray, guide: np.ndarray,
                   mode: str | None = None, transform: Transform | None = None) -> np.ndarray:
    """cut_paste, then the uncovered old place healed by PatchMatch (for a removal: the removed
    objects inpainted)."""
    return heal(plan_paste(image, source, guide, mode, transform), source, guide)


def inpaint(image: np.ndarray, hole_mask: np.ndarray, *, exclude: np.ndarray | None = None
            ) -> np.ndarray:
    """PatchMatch inpainting of hole_mask (bool HxW); `exclude`: pixels never copied from (they
    keep their values). Every pixel outside the hole keeps its value."""
    _check(image, hole_mask, *(() if exclude is None else (exclude,)))
    if not hole_mask.any():
        return image.copy()
    try:
        from patchmatch import patch_match
    except ImportError:
        raise PeerError("the PatchMatch peer needs the pypatchmatch package: "
                        "pip install -e \".[bench]\"") from None
    try:
        patch_match.set_random_seed(PM_SEED)
    except RuntimeError as e:
        raise PeerError(f"pypatchmatch is installed but its native library did not load ({e})"
                        ) from None
    hole = hole_mask.astype(np.uint8) * 255
    if exclude is not None and (exclude & ~hole_mask).any():
        glob = (exclude & ~hole_mask).astype(np.uint8) * 255
        out = patch_match.inpaint(image, hole, global_mask=glob, patch_size=PATCH_RADIUS)
    else:
        out = patch_match.inpaint(image, hole, patch_size=PATCH_RADIUS)
    out = np.asarray(out, np.uint8)
    result = image.copy()
    result[hole_mask] = out[hole_mask]  # guarantee: nothing outside the hole changes
    return result


PEER_NAMES = ("photo", "cut-paste", "cut-paste + heal")


def peers(image: np.ndarray, source: np.ndarray, guide: np.ndarray, mode: str | None = None,
          transform: Transform | None = None) -> dict[str, np.ndarray]:
    """The benchmark's peer rows for one edit: photo, cut-paste (not for a removal: it would be
    the photo), cut-paste + heal (for a removal: inpainting of the removed objects)."""
    p = plan_paste(image, source, guide, mode, transform)
    rows = {"photo": image.copy()}
    if p.transform is not None:
        rows["cut-paste"] = p.image
    rows["cut-paste + heal"] = heal(p, source, guide)
    return rows
