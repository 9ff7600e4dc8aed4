"""Conversions between the engine's numpy inputs/outputs and working-resolution tensors."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from magic_server.engine.resnet import IMAGENET_MEAN, IMAGENET_STD


def working_size(height: int, width: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """(h, w) with about resolution**2 pixels, the input's aspect ratio, sides multiples of 8."""
    scale = math.sqrt(resolution * resolution / (height * width))
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return h, w


def image_to_tensor(image: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 HxWx3 -> float (1, 3, h, w) in [0, 1], area-resampled to `size`."""
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def mask_to_tensor(mask: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """bool HxW -> soft (1, 1, h, w) in [0, 1] (area fraction covered)."""
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]
    return F.interpolate(t, size=size, mode="area").clamp(0, 1)


def tensor_to_images(pixels: torch.Tensor, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """(N, 3, h, w) in [0, 1] -> list of uint8 HxWx3, resized to `size` (H, W) when given."""
    t = pixels.detach().float()
    if size is not None and tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bicubic", align_corners=False,
                          antialias=size[0] < t.shape[-2])
    t = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in t]


def preview_size(h: int, w: int, longest: int) -> tuple[int, int]:
    s = min(1.0, longest / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


class Normaliser:
    """ImageNet normalisation: x' is optimised in normalised space, as in DeepInversion/IMAGINE."""

    def __init__(self, device: torch.device) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self.low = (0 - self.mean) / self.std
        self.high = (1 - self.mean) / self.std

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def clamp_(self, z: torch.Tensor) -> None:
        torch.maximum(z, self.low, out=z)
        torch.minimum(z, self.high, out=z)
