"""The patch encoder-decoder (ED) that maps an image to its label map.

Fully convolutional with a ~13 px receptive field, so it can only judge local appearance:
trained on x -> y it learns what each label looks like, and the cross-entropy of ED(x') to y'
then pushes x' to show that appearance where the guide says. A binary mask is the K = 2 case
(background, object); a layout edit's label map has up to 16 labels. The softmax over two
logits is the sigmoid of their difference, so K = 2 is the paper's BCE exactly.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from magic_server.engine.api import Cancelled
from magic_server.engine.losses import label_cross_entropy


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2, inplace=True))


class MaskNet(nn.Module):
    """3 conv + 3 transposed conv, 64 channels, BatchNorm, LeakyReLU.

    The encoder downsamples first so that no 64-channel map lives at full resolution:
    this network runs forward and backward on x' every iteration next to a ResNet-50.
    """

    def __init__(self, labels: int = 2, width: int = 64) -> None:
        super().__init__()
        self.labels = labels
        w = width
        self.encoder = nn.Sequential(
            _block(nn.Conv2d(3, w, 5, stride=2, padding=2), w),
            _block(nn.Conv2d(w, w, 3, stride=2, padding=1), w),
            _block(nn.Conv2d(w, w, 1), w),
        )
        self.decoder = nn.Sequential(
            _block(nn.ConvTranspose2d(w, w, 1), w),
            _block(nn.ConvTranspose2d(w, w, 4, stride=2, padding=1), w),
            nn.ConvTranspose2d(w, labels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised image batch (H, W multiples of 4). Returns label logits (N, K, H, W)."""
        return self.decoder(self.encoder(x))


def _augment(
    image: torch.Tensor, mask: torch.Tensor, batch: int, crop: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops, flips and a mild brightness/contrast jitter of (image, label fractions).

    Crops at random positions stop the network from learning where the object is.
    """
    _, _, h, w = image.shape
    ch, cw = min(crop, h), min(crop, w)
    ch, cw = ch - ch % 4, cw - cw % 4
    ys = torch.randint(0, h - ch + 1, (batch,), generator=gen).tolist()
    xs = torch.randint(0, w - cw + 1, (batch,), generator=gen).tolist()
    imgs = torch.stack([image[0, :, y : y + ch, x : x + cw] for y, x in zip(ys, xs)])
    masks = torch.stack([mask[0, :, y : y + ch, x : x + cw] for y, x in zip(ys, xs)])
    flip = (torch.rand(batch, 1, 1, 1, generator=gen) < 0.5).to(imgs.device)
    imgs = torch.where(flip, imgs.flip(-1), imgs)  # no boolean indexing: no device sync
    masks = torch.where(flip, masks.flip(-1), masks)
    gain = 1.0 + 0.1 * (torch.rand(batch, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.1 * (torch.rand(batch, 1, 1, 1, generator=gen) - 0.5)
    return imgs * gain.to(imgs) + bias.to(imgs), masks


CHECK_EVERY = 20
EARLY_STOP_IOU = 0.97


def binary_fractions(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) object fraction -> (N, 2, H, W) background / object fractions."""
    return torch.cat([1 - mask, mask], dim=1)


@torch.no_grad()
def label_iou(net: MaskNet, image: torch.Tensor, fractions: torch.Tensor) -> float:
    """The worst per-label IoU of the network's labels (argmax) against the map's."""
    was_training = net.training
    net.eval()
    predicted = net(image).argmax(1)
    net.train(was_training)
    target = fractions.argmax(1)
    worst = 1.0
    for k in range(fractions.shape[1]):
        union = ((predicted == k) | (target == k)).sum()
        if union:
            worst = min(worst, float(((predicted == k) & (target == k)).sum() / union))
    return worst


def train_mask_net(
    image: torch.Tensor,
    fractions: torch.Tensor,
    steps: int,
    gen: torch.Generator,
    cancel: threading.Event | None = None,
    on_step=None,
    batch: int = 8,
) -> MaskNet:
    """Fit a MaskNet on one image (1, 3, H, W normalised) and its label map as fractions
    (1, K, H, W; a binary mask through binary_fractions).

    Stops early once the network reproduces every label on the whole image (IoU >= 0.97):
    further training would only cost time. Returns the network frozen in eval mode: it is
    only used as a fixed judge afterwards.
    """
    net = MaskNet(labels=fractions.shape[1]).to(image.device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    crop = max(32, int(0.75 * min(image.shape[-2:])))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    net.train()
    for step in range(steps):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        imgs, targets = _augment(image, fractions, batch, crop, gen)
        loss = label_cross_entropy(net(imgs), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        checkpoint = (step + 1) % CHECK_EVERY == 0
        if on_step is not None:
            on_step(step + 1, steps, float(loss.detach()) if checkpoint else None)
        if checkpoint and step + 1 < steps and label_iou(net, image, fractions) >= EARLY_STOP_IOU:
            break
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
