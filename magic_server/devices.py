"""Choosing the torch device a job runs on: cuda > mps > cpu, or exactly what the user asked for."""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_CUDA_RE = re.compile(r"cuda(?::(\d+))?")


class DeviceError(ValueError):
    """A device that is unknown or not available here. The message is meant for the user."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' is not available (it needs an Apple-silicon Mac with a "
                              "PyTorch build that supports MPS); use --device cpu or auto")
        return torch.device("mps")
    match = _CUDA_RE.fullmatch(name)
    if match is None:
        raise DeviceError(f"unknown device {name!r}; choose {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} is not available: this PyTorch build sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    if match.group(1) is None:
        return torch.device("cuda")
    index = int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {name!r} does not exist: there {'is' if count == 1 else 'are'} "
                          f"{count} CUDA GPU{'' if count == 1 else 's'} (cuda:0"
                          f"{f' to cuda:{count - 1}' if count > 1 else ''})")
    return torch.device("cuda", index)
