"""Where a layout edit borrows patches from.

A binary edit's region of interest always holds the object it moves. A layout edit can ask for
a label that its region lacks: coffee painted onto the saucer, far from the cup. The patch term
would then find no patch of that label and copy the nearest wrong one. So for every label the
target map asks for and the region has too little of, a window of the photo around that label's
nearest pixels is added to the patch bank: the region and the windows side by side on one
canvas, separated by a strip of a "void" label that no patch of x' ever wants.
"""

from __future__ import annotations

import numpy as np
import torch

from magic_server.engine.regions import Box

MIN_DONOR_PIXELS = 400  # a label with fewer pixels in the region than this (or than...)
DONOR_SHARE = 0.25  # ...this share of the pixels painted with it) gets a donor window
MIN_WINDOW = 48  # px: the smallest donor window side
# The void strip's label fraction: far outside [0, 1], so a patch touching it is never a match.
VOID = 4.0


def donor_windows(source: np.ndarray, target: np.ndarray, edit: np.ndarray, box: Box
                  ) -> list[Box]:
    """Windows of the photo (full-size coordinates) holding the labels the edit region asks
    for and the region of interest `box` has too little of; each about the box's size, centred
    on the label's pixels nearest to the box."""
    inside = box.crop(source)
    h, w = source.shape
    cy, cx = (box.top + box.bottom) / 2, (box.left + box.right) / 2
    wh, ww = max(MIN_WINDOW, box.height), max(MIN_WINDOW, box.width)
    windows = []
    for k in np.unique(target[edit]).tolist():
        need = max(MIN_DONOR_PIXELS, DONOR_SHARE * int((target[edit] == k).sum()))
        if int((inside == k).sum()) >= min(need, int((source == k).sum())):
            continue
        ys, xs = np.nonzero(source == k)
        nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
        near = (np.abs(ys - ys[nearest]) < wh) & (np.abs(xs - xs[nearest]) < ww)
        my, mx = float(ys[near].mean()), float(xs[near].mean())  # into the label, not its edge
        top = int(np.clip(round(my - wh / 2), 0, max(0, h - wh)))
        left = int(np.clip(round(mx - ww / 2), 0, max(0, w - ww)))
        windows.append(Box(top, left, min(h, top + wh), min(w, left + ww)))
    return windows


def canvas(pieces: list[tuple[torch.Tensor, torch.Tensor]], gap: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (1, C, h, w) and their label fractions (1, K, h, w) side by side, `gap` px apart:
    (1, C, H, W) and (1, K + 1, H, W), the last label the void between and below pieces."""
    c = pieces[0][0].shape[1]
    k = pieces[0][1].shape[1]
    height = max(p.shape[-2] for p, _ in pieces)
    width = sum(p.shape[-1] for p, _ in pieces) + gap * (len(pieces) - 1)
    device = pieces[0][0].device
    image = torch.zeros(1, c, height, width, device=device)
    labels = torch.zeros(1, k + 1, height, width, device=device)
    labels[:, k] = VOID
    x = 0
    for piece, fractions in pieces:
        ph, pw = piece.shape[-2:]
        image[..., :ph, x : x + pw] = piece
        labels[:, :k, :ph, x : x + pw] = fractions
        labels[:, k, :ph, x : x + pw] = 0
        x += pw + gap
    return image, labels


def with_void(labels: torch.Tensor) -> torch.Tensor:
    """Label fractions (1, K, h, w) with the void label added, at 0 everywhere."""
    return torch.cat([labels, torch.zeros_like(labels[:, :1])], dim=1)
