"""Scale-safe classifier and feature-statistics terms, and gradient smoothing.

A classifier's gradients have whatever scale its training gave them: random, robust and
standard ImageNet networks differ by orders of magnitude, and a fixed weight tuned on one floods
an edit with noise on another, or is drowned. In the product presets the two judged terms are
therefore weighted by *shares*: at every patch matching, the gradient each term alone gives the
free pixels is measured, and rescaled so that its norm is `share` times the norm of the patch
term's gradient (measured at the same moment). The scales hold until the next matching. A
network whose logits are 1000 times too large gets the same pull as a well-scaled one.

Smoothing (optional): the judged gradient averaged over a few copies of x' with small noise and
a random shift of a few pixels, a known way to give a standard (not robust) network more
perceptually aligned input gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

JUDGED_TERMS = ("classifier", "feature_stats")
SMOOTH_NOISE = 0.15  # std of the copies' noise, in normalised units (about 3.5 % of the range)
SMOOTH_SHIFT = 4  # largest shift of a copy, in pixels at the working resolution
TINY = 1e-12


@dataclass
class TermScales:
    """Weights that give each judged term its share of the patch term's pull."""

    classifier: float = 0.0
    feature_stats: float = 0.0
    norms: dict[str, float] | None = None  # last measured gradient norms (tests, reports)


def balance(shares: dict[str, float], term_norms: dict[str, float], patch_norm: float
            ) -> TermScales:
    """Scale per term so that scale * term_norm == share * patch_norm (0 when the term gives
    no gradient at all: nothing to scale, and no noise amplified)."""
    scales = {}
    for name in JUDGED_TERMS:
        norm = term_norms.get(name, 0.0)
        share = shares.get(name, 0.0)
        ok = share > 0 and norm > TINY and patch_norm > 0 and bool(torch.isfinite(
            torch.tensor(norm)))
        scales[name] = share * patch_norm / norm if ok else 0.0
    return TermScales(scales["classifier"], scales["feature_stats"],
                      {**term_norms, "patch": patch_norm})


def measure(judge: Callable, seen: torch.Tensor, reference, weights, back: Callable,
            shares: dict[str, float]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                              dict[str, float]]:
    """Each judged term alone: (values, gradients with respect to `seen`, norms of the
    gradients they give the free pixels). `judge(seen, reference, None, weights)` returns
    (values, weighted gradient); `back(gradient)` carries a gradient on `seen` to the free
    pixels (it returns that gradient)."""
    values: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    norms: dict[str, float] = {}
    for name in JUDGED_TERMS:
        if shares.get(name, 0.0) <= 0:
            continue
        alone = replace(weights, mask=0.0, **{k: float(k == name) for k in JUDGED_TERMS})
        judged, gradient = judge(seen, reference, None, alone)
        values.update({k: v for k, v in judged.items() if k not in values})
        grads[name] = gradient
        norms[name] = float(back(gradient).float().norm())
    return values, grads, norms


class Smoothed:
    """A judge whose gradient is averaged over `copies` noisy, shifted copies of x'.

    Same call as the engine's judged step: (seen, reference, mask_net, weights) ->
    (values, weighted gradient with respect to seen)."""

    def __init__(self, judge: Callable, copies: int, gen: torch.Generator,
                 noise: float = SMOOTH_NOISE, shift: int = SMOOTH_SHIFT) -> None:
        self.judge, self.copies, self.gen = judge, copies, gen
        self.noise, self.shift = noise, shift

    def __call__(self, seen: torch.Tensor, reference, mask_net, weights):
        n = seen.shape[0]
        shifts = torch.randint(-self.shift, self.shift + 1, (self.copies, 2),
                               generator=self.gen).tolist()
        noise = torch.randn((self.copies, *seen.shape), generator=self.gen).to(seen.device)
        batch = torch.cat([torch.roll(seen + self.noise * noise[i], s, dims=(-2, -1))
                           for i, s in enumerate(shifts)])
        values, gradient = self.judge(batch, reference, mask_net, weights)
        # the terms are means over the batch: summing the copies' gradients (shifted back)
        # gives the mean over copies of the gradient one copy of the batch would have had
        total = torch.zeros_like(seen)
        for i, (dy, dx) in enumerate(shifts):
            total = total + torch.roll(gradient[i * n:(i + 1) * n], (-dy, -dx), dims=(-2, -1))
        return values, total
