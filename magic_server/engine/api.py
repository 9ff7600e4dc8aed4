"""The engine's public contract: what callers (CLI, server, benchmarks) pass in and get back.

The engine knows nothing of sockets or file formats: images are numpy arrays,
progress goes out through a callback, cancellation comes in through a threading.Event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MODES = ("synthesize", "move", "copy", "reshape", "remove", "layout")  # layout: Engine.synthesize_layout


class Cancelled(Exception):
    """Raised by Engine.synthesize when the cancel event was set."""


class EngineInputError(ValueError):
    """Inputs the engine cannot work with (empty mask, wrong shapes...). Message is user-facing."""


@dataclass(frozen=True)
class SynthesisOptions:
    samples: int = 3
    preset: str = "quality"
    iterations: int | None = None  # overrides the preset's iteration count, same proportions
    seed: int = 0
    mode: str = "synthesize"
    resolution: int = 224  # working resolution: about resolution**2 pixels, aspect kept
    preview_every: int = 0  # 0: no preview frames; n: a preview every n iterations
    preview_size: int = 128  # longest side of preview frames
    # Synthesize only the edit's region of interest and paste it back with a feathered mask,
    # leaving every other pixel bit-identical (False: the paper's whole new image x').
    composite: bool = True
    refine: bool = True  # coarse-to-fine: a second stage at twice the working resolution

    def validate(self) -> None:
        if self.mode not in MODES:
            raise EngineInputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 1 <= self.samples <= 16:
            raise EngineInputError("samples must be between 1 and 16")
        if self.iterations is not None and not 1 <= self.iterations <= 1_000_000:
            raise EngineInputError("iterations must be between 1 and 1,000,000")
        if not 32 <= self.resolution <= 1024:
            raise EngineInputError("resolution must be between 32 and 1024")


@dataclass
class Progress:
    iteration: int  # 1-based, iterations done so far
    total: int
    elapsed_s: float
    losses: dict[str, float] = field(default_factory=dict)
    previews: list[np.ndarray] | None = None  # uint8 HxWx3, one per sample, when asked for
    stage: str = "synthesis"  # "mask-net", "synthesis", ...

    @property
    def eta_s(self) -> float | None:
        if self.iteration <= 0:
            return None
        return self.elapsed_s / self.iteration * (self.total - self.iteration)


ProgressCallback = Callable[[Progress], None]


@dataclass
class SynthesisResult:
    images: list[np.ndarray]  # uint8 HxWx3 at the input image's size, one per sample
    seeds: list[int]
    predicted_class: int
    iterations: int
    elapsed_s: float
    losses: dict[str, float] = field(default_factory=dict)
    region: tuple[int, int, int, int] | None = None  # (top, left, bottom, right) synthesized
    # full-size bool: every pixel the edit may have changed (None: the whole image)
    touched: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know about the run


def check_inputs(image: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray,
                 allow_empty_guide: bool = False) -> None:
    """Raise EngineInputError for inputs no edit can come from. Removal may empty the guide."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EngineInputError("image must be an HxWx3 uint8 array")
    for name, m in (("source mask", source_mask), ("guide mask", guide_mask)):
        if m.shape != image.shape[:2]:
            raise EngineInputError(f"{name} is {m.shape[1]}x{m.shape[0]}, image is "
                                   f"{image.shape[1]}x{image.shape[0]}")
        if not np.any(m) and not (allow_empty_guide and m is guide_mask):
            raise EngineInputError(f"{name} is empty: paint the object white (or opaque)")
        if np.all(m):
            raise EngineInputError(f"{name} covers the whole image: it must mark an object")

