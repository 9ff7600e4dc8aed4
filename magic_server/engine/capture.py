"""How the iterations run on a GPU: eager, captured whole, or with a compiled judgement.

At the paper's sizes a GPU iteration is bound by kernel launches and host round trips, not by
arithmetic: ResNet-50's forward and input backward are hundreds of small kernels. Two ways out:
- "graph" (auto's choice on CUDA): the whole iteration (the critic's step, the judgement, the
  priors, the update of x') captured once per level as a CUDA graph and replayed
  (engine/iteration_capture.py); capturing costs a few iterations, no compiling;
- "compile": only the classifier's (and the mask network's) judgement of x' with its gradient,
  through torch.compile (mode "reduce-overhead"); compiling costs seconds.
When capturing, compiling or a replay fails, the eager code runs instead and the reason is
logged once and reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("magic_server")

CAPTURE_MODES = ("auto", "eager", "compile", "graph")
CAPTURE_ENV = "MAGIC_CAPTURE"  # overrides the engine's default mode (e.g. "eager")
# auto: a level of at least this many iterations on CUDA runs as a captured whole iteration
# (engine/iteration_capture.py): capturing costs about four eager iterations (two warm-up calls,
# the capture, the checked first replay), so shorter levels stay eager
GRAPH_MIN_ITERATIONS = 40
COMPILE_MODE = "reduce-overhead"


@dataclass(frozen=True)
class Choice:
    """How one level's iterations run, and why (logged, and reported in last_capture).

    how: "eager"; "graph": the whole iteration captured and replayed (backend "cuda-graph", or
    "trace", the CPU's stand-in that tests use); "compile": only the classifier's judgement,
    through torch.compile."""

    how: str
    reason: str
    backend: str | None = None


def resolve_mode(mode: str | None) -> str:
    mode = mode or os.environ.get(CAPTURE_ENV) or "auto"
    if mode not in CAPTURE_MODES:
        raise ValueError(f"capture mode {mode!r} is not one of {', '.join(CAPTURE_MODES)}")
    return mode


def decide(mode: str, device: torch.device, iterations: int) -> Choice:
    """The choice for a run of `iterations` at one resolution (a level)."""
    if mode == "compile":
        return Choice("compile", "capture mode compile")
    if mode == "eager":
        return Choice("eager", "capture mode eager")
    backend = "cuda-graph" if device.type == "cuda" else "trace"
    if mode == "graph":
        return Choice("graph", "capture mode graph", backend)
    if device.type != "cuda":
        return Choice("eager", f"auto: eager on {device.type} (captures run on CUDA only)")
    if iterations < GRAPH_MIN_ITERATIONS:
        return Choice("eager", f"auto: eager for {iterations} iterations (a capture pays from "
                               f"{GRAPH_MIN_ITERATIONS})")
    return Choice("graph", f"auto: {iterations} iterations on CUDA", backend)


def failure_line(exc: BaseException) -> str:
    """A failure to capture, as it is logged and reported: its type and first line."""
    message = str(exc).strip()
    return type(exc).__name__ + (f": {message.splitlines()[0][:300]}" if message else "")


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
                self.failure = failure_line(exc)
                log.warning("capture failed (%s); this edit runs eager", self.failure)
        return self.fn(*args)
