"""The engine's public contract: what callers (CLI, server, benchmarks) pass in and get back.

The engine knows nothing of sockets or file formats: images are numpy arrays,
progress goes out through a callback, cancellation comes in through a threading.Event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np


class EditKind(str, Enum):
    """What an edit does; each value equals its string (the wire's `mode`, magic_protocol's
    EDIT_MODES: a test keeps them in step)."""

    SYNTHESIZE = "synthesize"
    MOVE = "move"
    COPY = "copy"
    RESHAPE = "reshape"
    REMOVE = "remove"
    LAYOUT = "layout"  # label maps: EditEngine.synthesize_layout

    def __str__(self) -> str:
        return self.value


MODES = tuple(kind.value for kind in EditKind)


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


@dataclass(frozen=True)
class EngineDescription:
    """What an engine says of itself (the server's handshake, the CLI, the benchmarks)."""

    device: str  # "cpu", "cuda:0", "mps"
    device_name: str  # "CPU", the GPU's name, "Apple GPU (MPS)"
    gpu_memory_mb: int | None  # None off CUDA
    weights_label: str
    weights_loaded: bool  # real weights (False: untrained, random)
    preset_iterations: dict[str, int]  # each preset's iteration count
    bf16: bool = False
    capture: str = "eager"  # how iterations run (engine/capture.py)
    deterministic: bool = True


@runtime_checkable
class EditEngine(Protocol):
    """What the server, the command lines and the benchmarks call: Engine
    (engine/synthesis.py) and the tests' stand-ins implement it."""

    device: object
    weights_label: str

    def describe(self) -> EngineDescription: ...

    def warm_up(self) -> None: ...

    def synthesize(self, image: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray,
                   options: SynthesisOptions, on_progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None, *,
                   init_image: np.ndarray | None = None) -> SynthesisResult: ...

    def synthesize_layout(self, image: np.ndarray, source_labels: np.ndarray,
                          target_labels: np.ndarray, options: SynthesisOptions,
                          on_progress: ProgressCallback | None = None,
                          cancel: threading.Event | None = None, *,
                          init_image: np.ndarray | None = None) -> SynthesisResult: ...


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

