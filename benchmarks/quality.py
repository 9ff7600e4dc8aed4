"""Quality metrics for MAGIC edits that need no downloaded weights (numpy and scipy).

All images are uint8 HxWx3 numpy arrays, masks bool HxW of the same size. x is the photo, y its
source mask, y' the guide, x' the edited image; "edit region" is edit_region(y, y'): both masks
grown by 4% of the short side.

- guide adherence: a small colour/texture segmenter, independent of the engine, is fitted on the
  source photo x with its source mask y and applied to the edited image x'; its mask is compared
  with the guide y' (IoU over the image, agreement inside the region the edit changes). Its IoU
  on x itself against y is the *ceiling*: what a perfect edit could score with this segmenter.
- object left (removals): the share of the removed object (y minus y', its core) that a
  segmenter of the removed object alone (fitted on x: the removed object against the background,
  the kept objects left out) still labels object in x' (the photo scores its recall, ~1).
- preservation: PSNR and max abs difference outside the edit's footprint; `identical` = bit for
  bit the photo there.
- patch realism, measured on copies of x and x' downscaled to 96 px (long side), 7x7 patches:
  * coherence = mean, over the patches of x' centred in the edit region, of the RMS distance
    (8-bit levels) to the nearest patch of x other than the one at the same place, divided by
    x's self-similarity (the same mean for x's own patches of that region, every patch within
    7 px excluded). Excluding only the same place keeps the figure meaningful for the photo
    itself: on the coffee move the photo scores 0.51 (its patches' nearest other patches are
    about half as far as its nearest non-overlapping ones); a clean cut-paste scores about the
    same; blur, noise and unlike content score higher (issue 10 measured 1.72 for a
    noise-covered draft result).
    Lower is more natural; 1.0 means "as far from the photo as the photo's patches are from
    their non-overlapping neighbours". At the measuring size, pixel-level noise averages out
    (a 512 px photo is box-averaged over ~5x5 pixels): noise at the engine's working size shows
    here, per-pixel noise in the noise figure.
  * completeness = mean NN distance of x's region patches to x' (is everything of x still
    there?), over the same self-similarity; 0 for the photo itself.
- noise figure: high-frequency energy of x' in the edit region relative to x's there, 1.0 =
  like the photo, < 1 blurred, > 1 noisy. With G_s a Gaussian blur of s px, HF = mean squared
  (x - G_1 x) and MF = mean squared (G_1 x - G_2 x) over the region (RGB summed); the figure is
  (HF / MF) of x' over (HF / MF) of x, with x''s MF floored at half of x's. Dividing by the band
  below makes it a statement about the spectrum's tail, not about how much texture the region
  holds (a sharp edit with somewhat plainer content than the photo stays near 1); the floor
  makes a washed-out or flat region (less than half the photo's texture energy) score low
  instead of 0/0 (a flat fill: about 0.3, from its outline). The photo scores exactly 1; a 3x
  downscale-upscale about 0.1-0.3; Gaussian noise of 8 levels about 1.3-2.5.
- diversity: mean pairwise RMS difference between samples, inside the edit region.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

# ---------------------------------------------------------------------------- small image tools


def box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)x(2r+1) window (edge-replicated), for 2-D or HxWxC arrays."""
    if r <= 0:
        return a.astype(np.float64)
    pad = [(r, r), (r, r)] + [(0, 0)] * (a.ndim - 2)
    p = np.pad(a.astype(np.float64), pad, mode="edge")
    c = np.cumsum(np.cumsum(p, axis=0), axis=1)
    c = np.pad(c, [(1, 0), (1, 0)] + [(0, 0)] * (a.ndim - 2))
    k = 2 * r + 1
    h, w = a.shape[:2]
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return s / (k * k)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return box_mean(mask, r) > 1e-9 if r > 0 else mask.copy()


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    return box_mean(mask, r) > 1 - 1e-9 if r > 0 else mask.copy()


def rgb_to_lab(img: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> CIE Lab (D65), float64 HxWx3."""
    c = img.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def edit_region(source_mask: np.ndarray, guide_mask: np.ndarray, margin: int | None = None
                ) -> np.ndarray:
    """Where an edit may change pixels: source and guide masks, grown by a margin
    (default 4% of the short side) for the blending seam."""
    if margin is None:
        margin = max(2, round(0.04 * min(source_mask.shape)))
    return dilate(source_mask | guide_mask, margin)


def changed_region(source_mask: np.ndarray, guide_mask: np.ndarray, margin: int = 2
                   ) -> np.ndarray:
    """Pixels whose label the edit asks to change (y XOR y'), grown a little."""
    return dilate(source_mask ^ guide_mask, margin)


# ---------------------------------------------------------------------------- preservation


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two uint8 images (inf when equal), optionally only where mask is True."""
    d = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        d = d[mask]
    if d.size == 0:
        return math.inf
    mse = float(np.mean(d ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@dataclass
class Preservation:
    psnr_outside: float  # dB, inf = untouched
    max_abs_outside: int  # 0..255
    outside_fraction: float  # share of the image that was measured
    identical: bool = True  # every pixel outside the region is the photo's, bit for bit


def _check_pair(source: np.ndarray, edited: np.ndarray, *masks: np.ndarray) -> None:
    if source.shape != edited.shape or source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(f"images must be HxWx3 of one size, got {source.shape} and "
                         f"{edited.shape}")
    for m in masks:
        if m.shape != source.shape[:2]:
            raise ValueError(f"mask is {m.shape}, images are {source.shape[:2]}")


def preservation(source: np.ndarray, edited: np.ndarray, region: np.ndarray) -> Preservation:
    _check_pair(source, edited, region)
    outside = ~region
    d = np.abs(source.astype(np.int16) - edited.astype(np.int16))
    max_abs = int(d[outside].max()) if outside.any() else 0
    return Preservation(psnr(source, edited, outside), max_abs, float(outside.mean()),
                        max_abs == 0)


# ---------------------------------------------------------------------------- guide adherence


def pixel_features(img: np.ndarray) -> np.ndarray:
    """Per-pixel Lab colour and local lightness std (5x5 window): HxWx4."""
    lab = rgb_to_lab(img)
    L = lab[..., 0]
    m = box_mean(L, 2)
    sd = np.sqrt(np.maximum(box_mean(L * L, 2) - m * m, 0))
    return np.concatenate([lab, sd[..., None]], axis=-1)


def boosting_features(img: np.ndarray) -> np.ndarray:
    """Per-pixel colour and texture, no position: Lab, Lab averaged over 7x7, lightness std over
    5x5 and 11x11, gradient magnitude and its 7x7 mean. HxWx10 float32."""
    from scipy import ndimage

    lab = rgb_to_lab(img)
    L = lab[..., 0]
    out = [lab, ndimage.uniform_filter(lab, (7, 7, 1), mode="nearest")]
    for r in (2, 5):
        m = box_mean(L, r)
        out.append(np.sqrt(np.maximum(box_mean(L * L, r) - m * m, 0))[..., None])
    g = np.hypot(ndimage.sobel(L, 0, mode="nearest"), ndimage.sobel(L, 1, mode="nearest"))
    out += [g[..., None], ndimage.uniform_filter(g, 7, mode="nearest")[..., None]]
    return np.concatenate(out, axis=-1).astype(np.float32)


FEATURE_REACH = 8  # pixels: how far boosting_features look around a pixel


def _one_thread():
    """scikit-learn's trees on one OpenMP thread: on a small shared CPU its threads spin-wait
    for each other (measured 2 s on one thread vs 7-18 s on two for one fit, 2-core machine
    under load); the work per image is small anyway."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


class ObjectSegmenter:
    """Object/background pixel classifier fitted on one photo and its mask.

    model="boosting" (default): gradient-boosted trees (scikit-learn's
    HistGradientBoostingClassifier) on per-pixel colour and texture features (boosting_features;
    no position, so a moved object is found where it went), fitted on up to 10,000 pixels of each
    class sampled from the photo (boundary pixels left out). model="histogram": each pixel's
    features (Lab colour, local texture) quantised into joint bins whose edges are the photo's own
    quantiles, one smoothed histogram per class (a non-parametric likelihood, as in GrabCut-style
    colour models). Either way the per-pixel evidence is averaged over a small window, and the
    decision threshold is the one that best reproduces the mask on the photo (a one-parameter
    calibration on x, y). The histogram also says which pixels look like nothing in the photo
    (bins the photo never fills, e.g. noise): those are "unknown", never object.
    """

    BINS = (16, 16, 16, 4)
    SAMPLES_PER_CLASS = 10_000

    def __init__(self, image: np.ndarray, mask: np.ndarray, *, smooth: int | None = None,
                 ignore: np.ndarray | None = None, model: str = "boosting", seed: int = 0
                 ) -> None:
        """ignore: pixels that belong to neither class (left out of the fit and calibration)."""
        if image.shape[:2] != mask.shape:
            raise ValueError(f"mask is {mask.shape}, image is {image.shape[:2]}")
        if model not in ("boosting", "histogram"):
            raise ValueError(f"unknown segmenter model {model!r}")
        if not mask.any() or mask.all():
            raise ValueError("the mask must contain both object and background")
        keep = np.ones_like(mask) if ignore is None else ~ignore
        self.model = model
        self.photo = image.copy()
        # window radius for averaging the evidence: ~2 px on a 300 px photo
        self.smooth = smooth if smooth is not None else max(1, round(min(mask.shape) / 150))
        f = pixel_features(image)
        self.edges = [np.quantile(f[..., i], np.linspace(0, 1, n + 1)[1:-1])
                      for i, n in enumerate(self.BINS)]
        codes = self._codes(f)
        band = max(1, round(0.01 * min(mask.shape)))  # leave out uncertain boundary pixels
        inside, outside = erode(mask, band) & keep, ~dilate(mask, band) & keep
        if inside.sum() < 10:
            inside = mask & keep
        if outside.sum() < 10:
            outside = ~mask & keep
        if not inside.any() or not outside.any():
            raise ValueError("the mask must contain both object and background")
        n = int(np.prod(self.BINS))
        h_obj = np.bincount(codes[inside], minlength=n) + 0.5
        h_bg = np.bincount(codes[outside], minlength=n) + 0.5
        self.llr_table = np.log(h_obj / h_obj.sum()) - np.log(h_bg / h_bg.sum())
        # bins no pixel of the photo falls in: colour/texture the photo does not contain
        self.unseen_table = np.bincount(codes.ravel(), minlength=n) == 0
        self.clf = None
        if model == "boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier

            rng = np.random.default_rng(seed)
            feats = boosting_features(image).reshape(-1, 10)

            def pick(m: np.ndarray) -> np.ndarray:
                idx = np.flatnonzero(m)
                return rng.choice(idx, min(self.SAMPLES_PER_CLASS, len(idx)), replace=False)

            pos, neg = pick(inside), pick(outside)
            x = np.concatenate([feats[pos], feats[neg]])
            y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
            with _one_thread():
                self.clf = HistGradientBoostingClassifier(
                    max_iter=80, learning_rate=0.1, max_leaf_nodes=31, early_stopping=False,
                    class_weight="balanced", random_state=seed).fit(x, y)
        self._photo_raw = self._raw(image)
        self._photo_score = box_mean(self._photo_raw, self.smooth)
        score = self._photo_score
        candidates = np.quantile(score, np.linspace(0.005, 0.995, 199))
        scores = [iou((score > t) & keep, mask & keep) for t in candidates]
        self.threshold = float(candidates[int(np.argmax(scores))])

    def _codes(self, f: np.ndarray) -> np.ndarray:
        codes = np.zeros(f.shape[:2], np.int64)
        for i, n in enumerate(self.BINS):
            b = np.searchsorted(self.edges[i], f[..., i].ravel()).reshape(f.shape[:2])
            codes = codes * n + np.clip(b, 0, n - 1)
        return codes

    def _llr(self, codes: np.ndarray) -> np.ndarray:
        return box_mean(self.llr_table[codes], self.smooth)

    def _raw(self, image: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Unsmoothed evidence for "object" per pixel (log-likelihood ratio or probability);
        with `where`, only there (0 elsewhere)."""
        if self.clf is None:
            return self.llr_table[self._codes(pixel_features(image))]
        f = boosting_features(image).reshape(-1, 10)
        out = np.zeros(image.shape[0] * image.shape[1])
        rows = np.arange(len(out)) if where is None else np.flatnonzero(where)
        if len(rows):
            with _one_thread():
                out[rows] = self.clf.predict_proba(f[rows])[:, 1]
        return out.reshape(image.shape[:2])

    def _full_score(self, image: np.ndarray) -> np.ndarray:
        """Smoothed evidence for "object" per pixel."""
        return box_mean(self._raw(image), self.smooth)

    def score(self, image: np.ndarray) -> np.ndarray:
        """_full_score, recomputed only near the pixels where `image` differs from the photo
        (every feature and the smoothing are local: elsewhere it is the photo's)."""
        if image.shape != self.photo.shape:
            raise ValueError(f"image is {image.shape}, the segmenter's photo "
                             f"{self.photo.shape}")
        if not np.any(image != self.photo):
            return self._photo_score.copy()
        raw = recompute_near_changes(self.photo, image, self._photo_raw, self._raw)
        return box_mean(raw, self.smooth)

    def predict_labels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(object, unknown): unknown pixels look like nothing in the photo (mostly bins the
        photo never fills, e.g. noise); they are never counted as object."""
        codes = self._codes(pixel_features(image))
        unknown = box_mean(self.unseen_table[codes], self.smooth) > 0.5
        return (self.score(image) > self.threshold) & ~unknown, unknown

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_labels(image)[0]


@dataclass
class Adherence:
    guide_iou: float  # IoU(segment(x'), y') over the whole image
    changed_agreement: float  # share of the changed region where segment(x') agrees with y'
    unknown_fraction: float  # share of the changed region unlike anything in x (counts as wrong)
    baseline_iou: float  # the same for the unedited photo x: what "no edit" scores
    baseline_agreement: float
    segmenter_iou_on_source: float  # IoU(segment(x), y): the segmenter's own ceiling


def guide_adherence(source: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray,
                    edited: np.ndarray, segmenter: ObjectSegmenter | None = None) -> Adherence:
    seg = segmenter or ObjectSegmenter(source, source_mask)
    changed = changed_region(source_mask, guide_mask)
    pred_src, unknown_src = seg.predict_labels(source)
    pred, unknown = seg.predict_labels(edited)

    def agreement(p: np.ndarray, unk: np.ndarray) -> float:
        return float(((p == guide_mask) & ~unk)[changed].mean()) if changed.any() else 1.0

    return Adherence(iou(pred, guide_mask), agreement(pred, unknown),
                     float(unknown[changed].mean()) if changed.any() else 0.0,
                     iou(pred_src, guide_mask), agreement(pred_src, unknown_src),
                     iou(pred_src, source_mask))


# ---------------------------------------------------------------------------- patch realism


def _downscale(img: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    from PIL import Image

    h, w = img.shape[:2]
    s = min(1.0, long_side / max(h, w))
    if s == 1.0:
        return img, 1.0
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX)), s


def _mask_resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]),
                                                            Image.Resampling.BOX)
    return np.asarray(m) > 0


def patches(img: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All p x p patches (valid positions) as rows of float32 in [0, 255], with their centres."""
    v = np.lib.stride_tricks.sliding_window_view(img.astype(np.float32), (p, p), axis=(0, 1))
    n_y, n_x = v.shape[:2]
    rows = v.reshape(n_y * n_x, -1)
    cy, cx = np.mgrid[0:n_y, 0:n_x]
    return rows, (cy.ravel() + p // 2), (cx.ravel() + p // 2)


def nearest_patch_distance(queries: np.ndarray, refs: np.ndarray, *,
                           q_pos: np.ndarray | None = None, r_pos: np.ndarray | None = None,
                           exclude_radius: float = 0.0, chunk: int = 512) -> np.ndarray:
    """For each query patch, RMS per-element distance (8-bit levels) to its nearest reference
    patch; references whose centre lies within exclude_radius of the query's are ignored."""
    refs = refs.astype(np.float32)
    r2 = (refs.astype(np.float64) ** 2).sum(1).astype(np.float32)
    out = np.empty(len(queries))
    dim = queries.shape[1]
    exclude = exclude_radius > 0 and q_pos is not None and r_pos is not None
    if exclude:
        ry, rx = (np.asarray(v, np.int32) for v in r_pos)
        lim = math.floor(exclude_radius ** 2)
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk].astype(np.float32)
        d = (q.astype(np.float64) ** 2).sum(1).astype(np.float32)[:, None] + r2[None]
        d -= 2 * (q @ refs.T)
        if exclude:
            dy = np.asarray(q_pos[0][s:s + chunk], np.int32)[:, None] - ry[None]
            dx = np.asarray(q_pos[1][s:s + chunk], np.int32)[:, None] - rx[None]
            d[dy * dy + dx * dx <= lim] = np.inf
        out[s:s + chunk] = np.sqrt(np.maximum(d.min(1).astype(np.float64), 0) / dim)
    return out


@dataclass
class Realism:
    coherence: float  # mean NN distance of x' edit-region patches to x (8-bit levels), the
    # patch of x at the same place excluded
    completeness: float  # mean NN distance of x patches (same region) to x'
    self_similarity: float  # mean NN distance of x region patches to x, self-matches excluded
    coherence_ratio: float  # coherence / self_similarity: ~1 or below = as natural as x itself
    completeness_ratio: float


_SELF_SIMILARITY: dict[tuple, float] = {}


def patch_realism(source: np.ndarray, edited: np.ndarray, region: np.ndarray, *,
                  patch: int = 7, long_side: int = 96, exclude_radius: float | None = None
                  ) -> Realism:
    """Bidirectional patch similarity of the edited region, computed at `long_side` resolution
    (see the module docstring for the definitions)."""
    _check_pair(source, edited, region)
    src, _ = _downscale(source, long_side)
    edt, _ = _downscale(edited, long_side)
    reg = _mask_resize(region, src.shape[:2])
    if exclude_radius is None:
        exclude_radius = float(patch)
    sp, sy, sx = patches(src, patch)
    ep = patches(edt, patch)[0]
    in_region = reg[sy, sx]
    if not in_region.any():
        raise ValueError("the region is empty at the measuring resolution")
    # the same place excluded (radius 0.5 px): the photo must not match itself trivially
    coherence = nearest_patch_distance(ep[in_region], sp, q_pos=(sy[in_region], sx[in_region]),
                                       r_pos=(sy, sx), exclude_radius=0.5).mean()
    completeness = nearest_patch_distance(sp[in_region], ep).mean()
    key = (hashlib.blake2b(src.tobytes() + reg.tobytes(), digest_size=16).digest(),
           src.shape, patch, float(exclude_radius))
    self_sim = _SELF_SIMILARITY.get(key)
    if self_sim is None:  # the same for every sample and peer of an edit: computed once
        self_sim = nearest_patch_distance(sp[in_region], sp, q_pos=(sy[in_region],
                                                                    sx[in_region]),
                                          r_pos=(sy, sx), exclude_radius=exclude_radius).mean()
        if len(_SELF_SIMILARITY) > 64:
            _SELF_SIMILARITY.clear()
        _SELF_SIMILARITY[key] = self_sim
    denom = max(float(self_sim), 1e-6)
    return Realism(float(coherence), float(completeness), float(self_sim),
                   float(coherence) / denom, float(completeness) / denom)


# ---------------------------------------------------------------------------- sharpness / noise


@dataclass
class Sharpness:
    noise_figure: float  # (HF/MF of x') / (HF/MF of x) in the region: 1 = like the photo
    hf_ratio: float  # plain HF energy of x' over x's in the region (content-dependent)
    hf_photo: float  # x's HF energy in the region (8-bit levels squared, RGB summed)


def _bands(img: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    from scipy.ndimage import gaussian_filter

    y = img.astype(np.float64)
    g1 = gaussian_filter(y, (1, 1, 0), mode="reflect")
    g2 = gaussian_filter(y, (2, 2, 0), mode="reflect")
    hf = ((y - g1) ** 2).sum(-1)[region].mean()
    mf = ((g1 - g2) ** 2).sum(-1)[region].mean()
    return float(hf), float(mf)


def sharpness(source: np.ndarray, edited: np.ndarray, region: np.ndarray) -> Sharpness:
    """The noise figure of x' in the region against the photo's (module docstring)."""
    _check_pair(source, edited, region)
    if not region.any():
        raise ValueError("the region is empty")
    hf_s, mf_s = _bands(source, region)
    if hf_s <= 1e-9 or mf_s <= 1e-9:
        raise ValueError("the photo is flat in the region: no high frequencies to compare with")
    hf_e, mf_e = _bands(edited, region)
    figure = (hf_e / max(mf_e, 0.5 * mf_s)) / (hf_s / mf_s)
    return Sharpness(float(figure), hf_e / hf_s, hf_s)


# ---------------------------------------------------------------------------- removal


def recompute_near_changes(photo: np.ndarray, image: np.ndarray, values: np.ndarray,
                           compute) -> np.ndarray:
    """The photo's per-pixel `values` (H, W, ...) with those of the pixels whose features
    (FEATURE_REACH px) may differ in `image` recomputed: compute(crop, near) on a crop with room
    for the features' own reach, taken only where `near`."""
    out = values.copy()
    differ = np.any(image != photo, axis=-1)
    if not differ.any():
        return out
    near = dilate(differ, FEATURE_REACH)
    ys, xs = np.nonzero(near)
    h, w = differ.shape
    y0, y1 = max(0, ys.min() - FEATURE_REACH), min(h, ys.max() + 1 + FEATURE_REACH)
    x0, x1 = max(0, xs.min() - FEATURE_REACH), min(w, xs.max() + 1 + FEATURE_REACH)
    crop_near = near[y0:y1, x0:x1]
    out[y0:y1, x0:x1][crop_near] = compute(image[y0:y1, x0:x1], crop_near)[crop_near]
    return out


def removed_core(source_mask: np.ndarray, guide_mask: np.ndarray) -> np.ndarray:
    """The removed object (y minus y') shrunk by 1% of the short side (at least 1 px), where
    the segmenter's answer does not depend on the object's outline."""
    removed = source_mask & ~guide_mask
    core = erode(removed, max(1, round(0.01 * min(removed.shape))))
    return core if core.sum() >= 10 else removed


def removal_segmenter(source: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray
                      ) -> ObjectSegmenter:
    """A segmenter for the removed object alone: fitted on the photo with the removed object
    (y minus y') against the background (outside y), the objects the guide keeps left out, so
    that a kept object's colours (a cup beside a removed spoon) do not count as the removed
    one."""
    removed = source_mask & ~guide_mask
    if not removed.any():
        raise ValueError("nothing is removed: the guide keeps every pixel of the source mask")
    return ObjectSegmenter(source, removed, ignore=source_mask & guide_mask)


def object_left(segmenter: ObjectSegmenter, edited: np.ndarray, source_mask: np.ndarray,
                guide_mask: np.ndarray) -> float:
    """Share of the removed object's core that `segmenter` (removal_segmenter) still labels
    object in x'."""
    core = removed_core(source_mask, guide_mask)
    if not core.any():
        raise ValueError("nothing is removed: the guide keeps every pixel of the source mask")
    if edited.shape[:2] != core.shape:
        raise ValueError(f"image is {edited.shape[:2]}, masks are {core.shape}")
    return float(segmenter.predict(edited)[core].mean())


# ---------------------------------------------------------------------------- diversity


def diversity(samples: list[np.ndarray], region: np.ndarray | None = None) -> float:
    """Mean pairwise RMS difference (8-bit levels) between samples, inside region if given.
    nan with fewer than two samples."""
    if len(samples) < 2:
        return math.nan
    dists = []
    for a, b in combinations(samples, 2):
        d = a.astype(np.float64) - b.astype(np.float64)
        if region is not None:
            d = d[region]
        dists.append(math.sqrt(float(np.mean(d ** 2))) if d.size else 0.0)
    return float(np.mean(dists))
