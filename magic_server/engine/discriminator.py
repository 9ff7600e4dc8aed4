"""WGAN-GP PatchGAN critic trained on x alone: it scores 21x21 patches, so x' is pushed to
be made of patches that look like the photo's."""

from __future__ import annotations

import torch
from torch import nn

from magic_server.engine.adam import Adam

GRADIENT_PENALTY_WEIGHT = 0.1


class PatchCritic(nn.Module):
    """conv4/s1, conv4/s2, conv4/s2, conv3/s1, 1x1: a 21 px receptive field.

    Narrow on purpose: its forward+backward runs every iteration next to a ResNet-50, and one
    photo's patches need little capacity (SinGAN's single-image critics use 32 channels).
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        a, b, c, d = widths
        act = lambda: nn.LeakyReLU(0.2, inplace=True)
        self.net = nn.Sequential(
            nn.Conv2d(3, a, 4, stride=1, padding=0), act(),
            nn.Conv2d(a, b, 4, stride=2, padding=1), act(),
            nn.Conv2d(b, c, 4, stride=2, padding=1), act(),
            nn.Conv2d(c, d, 3, stride=1, padding=1), act(),
            nn.Conv2d(d, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """alpha: (n,) mixing weights in [0, 1), one per crop."""
    alpha = alpha.view(-1, 1, 1, 1).to(real)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def crops_at(images: torch.Tensor, index: torch.Tensor, flip: torch.Tensor, size: int
             ) -> torch.Tensor:
    """Square crops of `images` by index: `index` (3, count) holds each crop's image, top row and
    left column; `flip` (count,) in [0, 1) mirrors a crop below 0.5. Tensor indexing, not
    slicing by host numbers, so that a captured step crops where this iteration's draw says."""
    image, top, left = index
    span = torch.arange(size, device=images.device)
    channels = torch.arange(images.shape[1], device=images.device)
    crops = images[image[:, None, None, None], channels[None, :, None, None],
                   (top[:, None] + span)[:, None, :, None], (left[:, None] + span)[:, None, None, :]]
    # torch.where, not boolean indexing: indexing by a mask waits for the GPU to count it
    return torch.where(flip.view(-1, 1, 1, 1) < 0.5, crops.flip(-1), crops)


class CriticTrainer:
    """One WGAN-GP critic step per call, on random crops of x (real) and x' (fake).

    Crops suffice because the critic only ever sees 21 px patches; they keep this step cheap.
    A step is `update(fake, *draw(fake.shape))`: the random draw on the host (the edit's
    generator, so the same seed crops the same places on any device), the update on the device
    without a host sync, so that it can be captured (engine/iteration_capture.py).
    """

    def __init__(self, real: torch.Tensor, gen: torch.Generator, crop: int = 64,
                 crops_per_step: int = 8, lr: float = 2e-4) -> None:
        self.real = real
        self.gen = gen
        self.crop = crop
        self.count = crops_per_step
        self.critic = PatchCritic().to(real.device)
        self.opt = Adam(list(self.critic.parameters()), lr=lr, betas=(0.0, 0.9))

    def size(self, shape: torch.Size) -> int:
        return min(self.crop, self.real.shape[-2], self.real.shape[-1], shape[-2], shape[-1])

    def draw(self, fake_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's random numbers, on the device: (6, count) crop indices (real, then fake)
        and (3, count) floats (real flips, fake flips, penalty mixing weights)."""
        size, count, gen = self.size(fake_shape), self.count, self.gen
        index, floats = [], []
        for n, _, h, w in (self.real.shape, fake_shape):
            index += [torch.randint(0, n, (count,), generator=gen),
                      torch.randint(0, h - size + 1, (count,), generator=gen),
                      torch.randint(0, w - size + 1, (count,), generator=gen)]
            floats.append(torch.rand(count, generator=gen))
        floats.append(torch.rand(count, generator=gen))
        device = self.real.device
        index_t, floats_t = torch.stack(index), torch.stack(floats)
        if device.type == "cuda":  # from pinned memory: a pageable copy would wait for the GPU
            return (index_t.pin_memory().to(device, non_blocking=True),
                    floats_t.pin_memory().to(device, non_blocking=True))
        return index_t.to(device), floats_t.to(device)

    def update(self, fake: torch.Tensor, index: torch.Tensor, floats: torch.Tensor
               ) -> torch.Tensor:
        """One critic step; returns its Wasserstein estimate (a tensor: no device sync)."""
        size = self.size(fake.shape)
        real = crops_at(self.real, index[:3], floats[0], size)
        fake = crops_at(fake.detach(), index[3:], floats[1], size)
        params = list(self.critic.parameters())
        for p in params:
            p.requires_grad_(True)
        wasserstein = self.critic(fake).mean() - self.critic(real).mean()
        loss = wasserstein + GRADIENT_PENALTY_WEIGHT * gradient_penalty(
            self.critic, real, fake, floats[2])
        grads = torch.autograd.grad(loss, params)
        self.opt.step(grads)
        for p in params:
            p.requires_grad_(False)
        return -wasserstein.detach()

    def step(self, fake: torch.Tensor) -> torch.Tensor:
        return self.update(fake, *self.draw(fake.shape))

    @property
    def state(self) -> list[torch.Tensor]:
        """Every tensor a step writes (engine/iteration_capture.py)."""
        return [*self.critic.parameters(), *self.opt.state]

    def generator_loss(self, images: torch.Tensor) -> torch.Tensor:
        return -self.critic(images).float().mean()
