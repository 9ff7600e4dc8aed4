"""MAGIC's loss terms, each a small pure function so it can be read and tested alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def channel_stats(feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over space, in float32."""
    f = feature.float().flatten(2)
    var, mean = torch.var_mean(f, dim=2, unbiased=False)
    return mean, torch.sqrt(var + 1e-8)


def feature_stats_loss(
    features: list[torch.Tensor], targets: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Sum over layers of MSE(mean) + MSE(std) against the reference image's statistics.

    targets holds (mean, std) of shape (1, C) per layer, broadcast over the batch.
    """
    total = features[0].new_zeros((), dtype=torch.float32)
    for feat, (t_mean, t_std) in zip(features, targets):
        mean, std = channel_stats(feat)
        total = total + F.mse_loss(mean, t_mean.expand_as(mean)) + F.mse_loss(std, t_std.expand_as(std))
    return total


def class_loss(logits: torch.Tensor, target_class: int) -> torch.Tensor:
    target = torch.full((logits.shape[0],), target_class, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def label_cross_entropy(logits: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of label logits (N, K, H, W) to soft label fractions (1 or N,
    K, H, W) that sum to 1 over K (a resized map's boundary pixels are mixtures)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(fractions.expand_as(log_p) * log_p).sum(1).mean()


def mask_loss(label_logits: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the encoder-decoder's labels on x' (N, K, H, W logits) and the
    guide's label fractions y' (1, K, H, W; a binary guide is background / object)."""
    return label_cross_entropy(label_logits, guide)


def total_variation_l1(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def total_variation_l2(x: torch.Tensor) -> torch.Tensor:
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return dy + dx


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """Mean per-sample l2 norm of the (normalised) image."""
    return x.flatten(1).norm(dim=1).mean()


def keep_loss(z: torch.Tensor, reference: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance to the photo over the pixels outside the edit region (keep == 1)."""
    diff = (z - reference).abs() * keep
    return diff.sum() / (keep.sum() * z.shape[0] * z.shape[1]).clamp(min=1.0)
