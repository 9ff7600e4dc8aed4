"""An independent judge of label maps for layout-edit benchmarks: which label does each pixel of
an image look like, by colour and texture alone?

    judge = LabelJudge(photo, source_labels)      # fitted on the photo and its own label map
    seen = judge.labels(image)                    # (H, W) label per pixel of any edited image

Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier, multi-class) over
quality.boosting_features (Lab, its 7x7 mean, lightness std at two scales, gradient energy; no
position, so a moved region is recognised where it went), fitted on up to SAMPLES_PER_LABEL
pixels of each label's interior (boundary pixels left out). The class probabilities are
averaged over a small window and the most probable label wins. Nothing of the engine is used.
`labels(photo)` against the source map is the judge's ceiling: what a perfect edit could score.
"""

from __future__ import annotations

import numpy as np
import quality

SAMPLES_PER_LABEL = 6000


class LabelJudge:
    def __init__(self, photo: np.ndarray, source: np.ndarray, *, seed: int = 0) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        if photo.shape[:2] != source.shape:
            raise ValueError(f"label map is {source.shape}, photo {photo.shape[:2]}")
        self.photo = photo.copy()
        self.count = int(source.max()) + 1
        self.smooth = max(1, round(min(source.shape) / 150))
        band = max(1, round(0.01 * min(source.shape)))
        feats = quality.boosting_features(photo).reshape(-1, 10)
        rng = np.random.default_rng(seed)
        rows, classes = [], []
        for k in range(self.count):
            inside = quality.erode(source == k, band)
            if inside.sum() < 20:
                inside = source == k
            idx = np.flatnonzero(inside)
            pick = rng.choice(idx, min(SAMPLES_PER_LABEL, len(idx)), replace=False)
            rows.append(pick)
            classes.append(np.full(len(pick), k))
        rows, classes = np.concatenate(rows), np.concatenate(classes)
        with quality._one_thread():
            self.clf = HistGradientBoostingClassifier(
                max_iter=80, learning_rate=0.1, max_leaf_nodes=31, early_stopping=False,
                class_weight="balanced", random_state=seed).fit(feats[rows], classes)
        self._photo_proba = self._proba(photo, None)

    def _proba(self, image: np.ndarray, where: np.ndarray | None) -> np.ndarray:
        """(H, W, count) unsmoothed class probabilities; with `where`, only there."""
        h, w = image.shape[:2]
        feats = quality.boosting_features(image).reshape(-1, 10)
        out = np.zeros((h * w, self.count))
        rows = np.arange(h * w) if where is None else np.flatnonzero(where)
        if len(rows):
            with quality._one_thread():
                p = self.clf.predict_proba(feats[rows])
            out[rows[:, None], self.clf.classes_[None, :]] = p
        return out.reshape(h, w, self.count)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Smoothed class probabilities; recomputed only near pixels that differ from the photo
        (the features reach quality.FEATURE_REACH pixels)."""
        if image.shape != self.photo.shape:
            raise ValueError(f"image is {image.shape}, the judge's photo {self.photo.shape}")
        proba = quality.recompute_near_changes(self.photo, image, self._photo_proba,
                                               self._proba)
        return quality.box_mean(proba, self.smooth)

    def labels(self, image: np.ndarray) -> np.ndarray:
        return self.probabilities(image).argmax(-1)


def per_label_iou(seen: np.ndarray, wanted: np.ndarray, where: np.ndarray | None = None
                  ) -> dict[int, float]:
    """IoU of each label (present in `wanted` or `seen` there) between the two maps, counted
    only where `where` is set (default: everywhere)."""
    if where is None:
        where = np.ones(wanted.shape, bool)
    out = {}
    for k in np.union1d(np.unique(wanted[where]), np.unique(seen[where])):
        a, b = (seen == k) & where, (wanted == k) & where
        out[int(k)] = quality.iou(a, b)
    return out


def mean_iou(seen: np.ndarray, wanted: np.ndarray, where: np.ndarray | None = None) -> float:
    ious = per_label_iou(seen, wanted, where)
    return float(np.mean(list(ious.values()))) if ious else float("nan")
