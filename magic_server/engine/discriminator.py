"""WGAN-GP PatchGAN critic trained on x alone: it scores 21x21 patches, so x' is pushed to
be made of patches that look like the photo's."""

from __future__ import annotations

import torch
from torch import nn

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
                     gen: torch.Generator) -> torch.Tensor:
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=gen).to(real)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def random_crops(images: torch.Tensor, count: int, size: int, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    size = min(size, h, w)
    idx = torch.randint(0, n, (count,), generator=gen).tolist()
    ys = torch.randint(0, h - size + 1, (count,), generator=gen).tolist()
    xs = torch.randint(0, w - size + 1, (count,), generator=gen).tolist()
    crops = torch.stack([images[i, :, y : y + size, x : x + size] for i, y, x in zip(idx, ys, xs)])
    # torch.where, not boolean indexing: indexing by a mask waits for the GPU to count it
    flip = (torch.rand(count, 1, 1, 1, generator=gen) < 0.5).to(crops.device)
    return torch.where(flip, crops.flip(-1), crops)


class CriticTrainer:
    """One WGAN-GP critic step per call, on random crops of x (real) and x' (fake).

    Crops suffice because the critic only ever sees 21 px patches; they keep this step cheap.
    """

    def __init__(self, real: torch.Tensor, gen: torch.Generator, crop: int = 64,
                 crops_per_step: int = 8, lr: float = 2e-4) -> None:
        self.real = real
        self.gen = gen
        self.crop = crop
        self.count = crops_per_step
        self.critic = PatchCritic().to(real.device)
        self.opt = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.0, 0.9),
                                    fused=real.device.type == "cuda")

    def step(self, fake: torch.Tensor) -> torch.Tensor:
        """Returns the critic's Wasserstein estimate (a detached tensor: no device sync here)."""
        real = random_crops(self.real, self.count, self.crop, self.gen)
        fake = random_crops(fake.detach(), self.count, self.crop, self.gen)
        for p in self.critic.parameters():
            p.requires_grad_(True)
        wasserstein = self.critic(fake).mean() - self.critic(real).mean()
        loss = wasserstein + GRADIENT_PENALTY_WEIGHT * gradient_penalty(self.critic, real, fake, self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        for p in self.critic.parameters():
            p.requires_grad_(False)
        return -wasserstein.detach()

    def generator_loss(self, images: torch.Tensor) -> torch.Tensor:
        return -self.critic(images).float().mean()
