"""Choosing the torch device a job runs on: cuda > mps > cpu, or exactly what the user asked for.

`--device` of magic-server may also be a comma-separated list, one engine worker per entry
(`cuda:0,cuda:1`, `cpu,cpu`), or `all` (every CUDA GPU, or the CPU when there is none).
parse_device_list() checks the spelling without importing torch (so a typo fails at once);
resolve_device_list() then checks what this machine has.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_LIST_CHOICES = (f"{DEVICE_CHOICES}, a comma-separated list of them (one worker each, "
                       "e.g. cuda:0,cuda:1 or cpu,cpu), or all (every CUDA GPU)")
ALL = "all"
_CUDA_RE = re.compile(r"cuda(?::(\d+))?")
_NAMES = ("auto", "cpu", "mps", "cuda")


class DeviceError(ValueError):
    """A device that is unknown or not available here. The message is meant for the user."""


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    import torch

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


def parse_device_list(text: str | None) -> list[str]:
    """`--device` text -> lower-case device names, one per worker; spelling only (no torch).

    Raises DeviceError (one line) for an empty list, an empty entry, an unknown name, or
    `all` combined with other devices."""
    raw = (text or "").strip().lower()
    if not raw:
        raise DeviceError(f"--device is empty; choose {DEVICE_LIST_CHOICES}")
    names = [part.strip() for part in raw.split(",")]
    if "" in names:
        raise DeviceError(f"--device {text!r} has an empty entry (a stray comma?); choose "
                          f"{DEVICE_LIST_CHOICES}")
    for name in names:
        if name != ALL and name not in _NAMES and _CUDA_RE.fullmatch(name) is None:
            raise DeviceError(f"unknown device {name!r} in --device {text!r}; choose "
                              f"{DEVICE_LIST_CHOICES}")
    if ALL in names and len(names) > 1:
        raise DeviceError(f"--device {text!r}: 'all' already means every CUDA GPU; give it alone "
                          "or list the devices")
    return names


def resolve_device_list(names: Sequence[str]) -> list[torch.device]:
    """Names from parse_device_list() -> the devices, checked against this machine.

    `all` is every CUDA GPU (cuda:0 .. cuda:N-1), or the CPU when there is none. A bare `cuda`
    (or `auto` picking CUDA) is given its index, so that each worker names its GPU exactly."""
    import torch

    if list(names) == [ALL]:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.device("cuda", i) for i in range(count)] or [torch.device("cpu")]
    out = []
    for name in names:
        device = resolve_device(name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        out.append(device)
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """A host or device out-of-memory error (the server's workers and magic-edit)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only the engine imports torch; no need to load it here
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
