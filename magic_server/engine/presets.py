"""Named iteration budgets. All presets keep the paper's proportions (18,000 iterations,
discriminator joining at 5,000, 100 warm-up steps); only the length changes."""

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
    refine_iterations: int = 0  # iterations at twice the working resolution, after the main ones


@dataclass(frozen=True)
class Preset:
    name: str
    iterations: int
    mask_net_steps: int
    description: str
    refine_fraction: float = 0.2  # refinement iterations as a fraction of the main ones
    init_fraction: float = 1.0  # iterations kept when starting from the artist's composite

    def schedule(self, iterations: int | None = None, from_composite: bool = False) -> Schedule:
        n = iterations or self.iterations
        if from_composite and iterations is None:
            n = max(1, round(n * self.init_fraction))
        return Schedule(
            iterations=n,
            warmup=max(1, round(n * PAPER_WARMUP / PAPER_ITERATIONS)),
            discriminator_start=round(n * PAPER_DISCRIMINATOR_START / PAPER_ITERATIONS),
            mask_net_steps=self.mask_net_steps,
            refine_iterations=round(n * self.refine_fraction),
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("paper", PAPER_ITERATIONS, 600, "the paper's setting (best, slowest)"),
        Preset("quality", 3_000, 400, "close to the paper's look in a sixth of the time",
               init_fraction=0.6),
        Preset("draft", 600, 300, "quick look at a layout", refine_fraction=0.1,
               init_fraction=0.4),
        Preset("tiny", 40, 120, "smoke tests and CI only", refine_fraction=0.1),
    )
}


def resolve_schedule(preset: str, iterations: int | None, from_composite: bool = False) -> Schedule:
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset].schedule(iterations, from_composite)


def learning_rate(step: int, schedule: Schedule, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero at the last iteration."""
    if step < schedule.warmup:
        return peak * (step + 1) / schedule.warmup
    span = max(1, schedule.iterations - schedule.warmup)
    progress = min(1.0, (step - schedule.warmup) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
