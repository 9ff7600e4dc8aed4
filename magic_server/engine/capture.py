"""Capturing the classifier's judgement of x' (the GPU fast path).

At the paper's sizes a GPU iteration is bound by kernel launches and host round trips, not by
arithmetic: ResNet-50's forward and input backward are hundreds of small kernels. torch.compile
fuses them and, in mode "reduce-overhead", replays them as CUDA graphs. What is captured is the
part of the iteration whose shapes stay fixed for the whole edit: the classifier (and the mask
network) judging x' at the working resolution, with its gradient. Compiling costs seconds, so
`auto` compiles only runs long enough to pay for it; when compiling or a compiled call fails,
the eager code runs instead and the reason is logged once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("magic_server")

CAPTURE_MODES = ("auto", "eager", "compile")
CAPTURE_ENV = "MAGIC_CAPTURE"  # overrides the engine's default mode (e.g. "eager")
# auto: compile on CUDA for runs of at least this many iterations at one working resolution
# (the paper's setting); shorter edits stay eager, where compiling would cost more than it saves.
AUTO_MIN_ITERATIONS = 2000
COMPILE_MODE = "reduce-overhead"


def resolve_mode(mode: str | None) -> str:
    mode = mode or os.environ.get(CAPTURE_ENV) or "auto"
    if mode not in CAPTURE_MODES:
        raise ValueError(f"capture mode {mode!r} is not one of {', '.join(CAPTURE_MODES)}")
    return mode


def wants_capture(mode: str, device: torch.device, iterations: int) -> bool:
    return decide(mode, device, iterations)[0]


def decide(mode: str, device: torch.device, iterations: int) -> tuple[bool, str]:
    """(capture?, why): the choice for one edit, with the reason that is logged and reported."""
    if mode == "compile":
        return True, "capture mode compile"
    if mode == "eager":
        return False, "capture mode eager"
    if device.type != "cuda":
        return False, f"auto: eager on {device.type} (captures run on CUDA only)"
    if iterations < AUTO_MIN_ITERATIONS:
        return False, (f"auto: eager for {iterations} iterations (compiling pays from "
                       f"{AUTO_MIN_ITERATIONS})")
    return True, f"auto: {iterations} iterations on CUDA"


class Captured:
    """`fn` compiled, with the eager `fn` as the fallback. Call it like `fn`."""

    def __init__(self, fn: Callable[..., Any], *, backend: str = "inductor",
                 mode: str | None = COMPILE_MODE) -> None:
        self.fn = fn
        options: dict[str, Any] = {"backend": backend, "dynamic": False}
        if backend == "inductor" and mode:
            options["mode"] = mode
        self.compiled = torch.compile(fn, **options)
        self.failure: str | None = None
        self.calls = 0

    @property
    def active(self) -> bool:
        return self.failure is None

    def __call__(self, *args: Any) -> Any:
        if self.failure is None:
            try:
                out = self.compiled(*args)
                self.calls += 1
                return out
            except Exception as exc:  # noqa: BLE001 - any failure to capture falls back
                message = str(exc).strip()
                self.failure = type(exc).__name__ + (
                    f": {message.splitlines()[0][:300]}" if message else "")
                log.warning("capture failed (%s); this edit runs eager", self.failure)
        return self.fn(*args)
