"""Building engines: a weights choice and devices in, one Engine per device out.

The one place that loads the classifier and builds an Engine, for the server, magic-edit,
the bundled sample and the benchmarks. What happens when the default weights are not there
is the caller's choice (`Fallback`): the server and the benchmarks' named weights never fall
back; magic-edit and the sample take the stand-in classifier (said through `say`); the
quality benchmark measures with random weights rather than stop (said through `say`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from enum import Enum

import torch

from magic_server.engine.synthesis import Engine
from magic_server.weights.classifier import (
    UNTRAINED,
    load_classifier,
    load_default_classifier,
)
from magic_server.weights.errors import WeightsError


class Fallback(str, Enum):
    """What `weights=None` (the installed weights) falls back to when they cannot be had."""

    NONE = "none"  # a WeightsError saying what to do
    STAND_IN = "stand-in"  # EfficientNet-Lite0 (weights/classifier.load_default_classifier)
    UNTRAINED = "untrained"  # random weights


def build_engines(weights: str | None, devices: Sequence[torch.device | str], *,
                  fallback: Fallback = Fallback.NONE, allow_download: bool = False,
                  progress: Callable | None = None, say: Callable[[str], None] | None = None,
                  capture_mode: str | None = None) -> list[Engine]:
    """One Engine per device, each with its own copy of the classifier (the checkpoint is read
    once). weights: None (the installed ones), a checkpoint path, "efficientnet-lite0" or
    "untrained". Raises WeightsError (a line for the user) when they cannot be had."""
    if not devices:
        raise ValueError("no device to build an engine on")
    # one device: loaded straight onto it; several: read once on the CPU, copied to each
    where = devices[0] if len(devices) == 1 else "cpu"
    if weights is None and fallback is Fallback.STAND_IN:
        model, label = load_default_classifier(where, allow_download=allow_download,
                                               progress=progress, say=say)
    else:
        try:
            model, label = load_classifier(weights, where, allow_download=allow_download,
                                           progress=progress)
        except WeightsError as exc:
            if weights is not None or fallback is not Fallback.UNTRAINED:
                raise
            if say is not None:
                say(f"no installed classifier weights ({exc}); measuring with UNTRAINED "
                    "weights")
            model, label = load_classifier(UNTRAINED, where)
    engines = []
    for i, device in enumerate(devices):
        own = model if i == len(devices) - 1 else copy.deepcopy(model)
        engines.append(Engine(own, device, label, capture_mode=capture_mode))
    return engines


def build_engine(weights: str | None, device: torch.device | str, **how) -> Engine:
    """One Engine on `device` (build_engines' arguments)."""
    return build_engines(weights, [device], **how)[0]
