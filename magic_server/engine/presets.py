"""Named iteration budgets.

`paper` keeps the paper's objective and proportions (18,000 iterations at one resolution,
discriminator joining at 5,000, 100 warm-up steps). The product presets (`quality`, `draft`,
`tiny`) run the same loop coarse to fine over a pyramid of the edit's region, with the patch
nearest-neighbour term added (engine/patch_nn.py); their `iterations` are spread over the levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PAPER_ITERATIONS = 18_000
PAPER_DISCRIMINATOR_START = 5_000
PAPER_WARMUP = 100


@dataclass(frozen=True)
class Schedule:
    iterations: int
    warmup: int
    discriminator_start: int  # 0-based iteration at which the patch critic joins
    mask_net_steps: int  # steps to fit the encoder-decoder on x -> y before synthesis


@dataclass(frozen=True)
class Preset:
    name: str
    iterations: int
    mask_net_steps: int
    description: str
    init_fraction: float = 1.0  # iterations kept when starting from the artist's composite
    pyramid: bool = True  # False: the paper's single-resolution objective
    finest_side: int = 512  # product: longest side of the last level (the region's own size
    #                         when it is smaller), so detail is synthesized, not upsampled
    refresh_every: int = 8  # product: iterations between two patch matchings

    def schedule(self, iterations: int | None = None, from_composite: bool = False) -> Schedule:
        n = iterations or self.iterations
        if from_composite and iterations is None:
            n = max(1, round(n * self.init_fraction))
        return Schedule(
            iterations=n,
            warmup=max(1, round(n * PAPER_WARMUP / PAPER_ITERATIONS)),
            discriminator_start=round(n * PAPER_DISCRIMINATOR_START / PAPER_ITERATIONS),
            mask_net_steps=self.mask_net_steps,
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("paper", PAPER_ITERATIONS, 600, "the paper's objective and setting (slowest)",
               pyramid=False),
        Preset("quality", 600, 400, "coarse to fine at the region's own size, up to 1024 px",
               init_fraction=0.6, finest_side=1024, refresh_every=6),
        Preset("draft", 240, 300, "quick: coarse to fine up to 512 px", init_fraction=0.6,
               finest_side=512),
        Preset("tiny", 40, 120, "smoke tests and CI only", finest_side=128),
    )
}


def preset_iterations() -> dict[str, int]:
    """Each preset's iteration count, by name (what an engine describes)."""
    return {name: p.iterations for name, p in PRESETS.items()}


def resolve_preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def resolve_schedule(preset: str, iterations: int | None, from_composite: bool = False) -> Schedule:
    return resolve_preset(preset).schedule(iterations, from_composite)


def learning_rate(step: int, schedule: Schedule, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero at the last iteration."""
    if step < schedule.warmup:
        return peak * (step + 1) / schedule.warmup
    span = max(1, schedule.iterations - schedule.warmup)
    progress = min(1.0, (step - schedule.warmup) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
