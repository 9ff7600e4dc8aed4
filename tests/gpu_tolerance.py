"""How close a GPU's classifier outputs must be to the CPU's: what TF32 convolutions and bf16
autocast allow, not float32's last digits (atol 1e-3 failed on an H200 by about 1e-2, issue 18).

The same top-5 classes for every image, and logits whose cosine similarity is at least 0.999.
Classes that tie within the noise are interchangeable: a class one side ranks in its top 5 must
be within TIE of the other side's fifth logit (TIE: a fraction of the logits' spread; a random
ResNet-50's 5th and 6th logits can be 0.01 apart, below TF32's differences)."""

from __future__ import annotations

import torch

MIN_COSINE = 0.999
TOP = 5
TIE = 0.025  # of the expected logits' standard deviation (bf16 autocast: about 2% seen on CPU)


def _outside(top: list[int], other: torch.Tensor, tie: float) -> list[int]:
    """Classes in `top` that `other` does not rank within `tie` of its own fifth logit."""
    fifth = other.topk(TOP).values[-1]
    return [k for k in top if other[k] < fifth - tie]


def judgement_differs(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """None when `got` (N, classes) logits judge like `expected`; else what differs."""
    got, expected = got.detach().float().cpu(), expected.detach().float().cpu()
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    for i in range(got.shape[0]):
        tie = TIE * float(expected[i].std())
        mine, theirs = got[i].topk(TOP).indices.tolist(), expected[i].topk(TOP).indices.tolist()
        wrong = _outside(mine, expected[i], tie) + _outside(theirs, got[i], tie)
        if wrong:
            return (f"image {i}: top-{TOP} classes {sorted(mine)} against {sorted(theirs)}: "
                    f"{sorted(set(wrong))} not in both (ties within {tie:.3g} allowed)")
        if cosine[i] < MIN_COSINE:
            return f"image {i}: cosine similarity {float(cosine[i]):.5f} < {MIN_COSINE}"
    return None
