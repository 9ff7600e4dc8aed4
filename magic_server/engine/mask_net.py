"""The patch encoder-decoder (ED) that maps an image to the object's mask.

Fully convolutional with a ~13 px receptive field, so it can only judge local appearance:
trained on x -> y it learns what the object looks like, and BCE(ED(x'), y') then pushes
x' to show that appearance where the guide mask says.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from magic_server.engine.api import Cancelled


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2, inplace=True))


class MaskNet(nn.Module):
    """3 conv + 3 transposed conv, 64 channels, BatchNorm, LeakyReLU.

    The encoder downsamples first so that no 64-channel map lives at full resolution:
    this network runs forward and backward on x' every iteration next to a ResNet-50.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            _block(nn.Conv2d(3, w, 5, stride=2, padding=2), w),
            _block(nn.Conv2d(w, w, 3, stride=2, padding=1), w),
            _block(nn.Conv2d(w, w, 1), w),
        )
        self.decoder = nn.Sequential(
            _block(nn.ConvTranspose2d(w, w, 1), w),
            _block(nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), w),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised image batch (H, W multiples of 4). Returns mask logits (N, 1, H, W)."""
        return self.decoder(self.encoder(x))


def _augment(
    image: torch.Tensor, mask: torch.Tensor, batch: int, crop: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops, flips and a mild brightness/contrast jitter of (image, mask).

    Crops at random positions stop the network from learning where the object is.
    """
    _, _, h, w = image.shape
    ch, cw = min(crop, h), min(crop, w)
    ch, cw = ch - ch % 4, cw - cw % 4
    ys = torch.randint(0, h - ch + 1, (batch,), generator=gen).tolist()
    xs = torch.randint(0, w - cw + 1, (batch,), generator=gen).tolist()
    imgs = torch.stack([image[0, :, y : y + ch, x : x + cw] for y, x in zip(ys, xs)])
    masks = torch.stack([mask[0, :, y : y + ch, x : x + cw] for y, x in zip(ys, xs)])
    flip = (torch.rand(batch, generator=gen) < 0.5).to(imgs.device)
    imgs[flip] = imgs[flip].flip(-1)
    masks[flip] = masks[flip].flip(-1)
    gain = 1.0 + 0.1 * (torch.rand(batch, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.1 * (torch.rand(batch, 1, 1, 1, generator=gen) - 0.5)
    return imgs * gain.to(imgs) + bias.to(imgs), masks


CHECK_EVERY = 20
EARLY_STOP_IOU = 0.97


@torch.no_grad()
def mask_iou(net: MaskNet, image: torch.Tensor, mask: torch.Tensor) -> float:
    was_training = net.training
    net.eval()
    predicted = net(image) > 0
    net.train(was_training)
    target = mask > 0.5
    union = (predicted | target).sum()
    return float((predicted & target).sum() / union) if union else 1.0


def train_mask_net(
    image: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    gen: torch.Generator,
    cancel: threading.Event | None = None,
    on_step=None,
    batch: int = 8,
) -> MaskNet:
    """Fit a MaskNet on one image (1, 3, H, W normalised) and its mask (1, 1, H, W in [0,1]).

    Stops early once the network reproduces the mask on the whole image (IoU >= 0.97):
    further training would only cost time. Returns the network frozen in eval mode: it is
    only used as a fixed judge afterwards.
    """
    net = MaskNet().to(image.device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    crop = max(32, int(0.75 * min(image.shape[-2:])))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    net.train()
    for step in range(steps):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        imgs, masks = _augment(image, mask, batch, crop, gen)
        loss = F.binary_cross_entropy_with_logits(net(imgs), masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        checkpoint = (step + 1) % CHECK_EVERY == 0
        if on_step is not None:
            on_step(step + 1, steps, float(loss.detach()) if checkpoint else None)
        if checkpoint and step + 1 < steps and mask_iou(net, image, mask) >= EARLY_STOP_IOU:
            break
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
