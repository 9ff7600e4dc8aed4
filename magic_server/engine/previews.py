"""Preview frames taken off the device without stopping it.

On a GPU, reading a tensor back waits for every queued kernel: a preview copied the plain way
would stall the optimisation each time. Here the copy into pinned host memory is queued at one
iteration and handed out at a later one, once it has arrived. On the CPU it is ready at once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class PreviewCopies:
    def __init__(self, device: torch.device) -> None:
        self.async_copy = device.type == "cuda"
        self.pending: tuple[torch.Tensor, torch.cuda.Event | None] | None = None

    def start(self, pixels: torch.Tensor, size: tuple[int, int]) -> None:
        """Queue a copy of (N, 3, h, w) pixels in [0, 1], resized to `size` (H, W)."""
        t = pixels.detach().float()
        if tuple(t.shape[-2:]) != tuple(size):
            t = F.interpolate(t, size=size, mode="bicubic", align_corners=False,
                              antialias=size[0] < t.shape[-2])
        frames = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        if not self.async_copy:
            self.pending = (frames.contiguous(), None)
            return
        host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(frames, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending = (host, done)

    def collect(self, wait: bool = False) -> list[np.ndarray] | None:
        """The frames of the latest copy once it has arrived (wait: block until it has)."""
        if self.pending is None:
            return None
        host, done = self.pending
        if done is not None and not wait and not done.query():
            return None
        if done is not None:
            done.synchronize()
        self.pending = None
        return [np.ascontiguousarray(a) for a in host.numpy()]
