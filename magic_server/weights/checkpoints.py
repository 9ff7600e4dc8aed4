"""Reading ResNet-50 classifier weights safely and checking they fit magic_server.engine.resnet.

Accepted files:
- checkpoints of the Madry-lab `robustness` library (e.g. resnet50_l2_eps0.05.ckpt): a torch file
  holding {"model": {"module.model.*", "module.attacker.model.*", "module.normalizer.*"}, "epoch",
  maybe "optimizer", "schedule"}; only module.model.* is used;
- torchvision-style ResNet-50 state dicts, bare or under "state_dict"/"model", with or without the
  "module." prefix that DataParallel adds;
- safetensors files holding either of the above key layouts.

Torch files are read with weights_only=True: a file that would need arbitrary unpickling is refused.
The robustness library saves with torch.save(..., pickle_module=dill); its files hold only state
dicts, plus, when it trained with a LambdaLR schedule (cyclic or interpolated learning rates),
numpy float64 learning rates in the optimizer's and the scheduler's state. Those need exactly one
global besides torch's own, numpy's scalar constructor (under its numpy 1.x and 2.x names), with
the float64 dtype it is given (numpy.dtype and its Float64DType class); it builds a number from
a dtype and raw bytes and runs no code. These are allowed for the duration of the load only;
every other global is still refused.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from magic_server.engine.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50
from magic_server.weights.errors import MISSING_WEIGHTS_HELP, WeightsError

_ROBUSTNESS_MODEL = "model."
_ROBUSTNESS_IGNORED = ("attacker.", "normalizer.")
_NORMALIZER_MEAN = "normalizer.new_mean"
_NORMALIZER_STD = "normalizer.new_std"
_OPTIONAL_SUFFIX = "num_batches_tracked"
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
# torch.serialization.safe_globals changes process-wide state while it is entered: one load at a
# time, so that one thread leaving it cannot withdraw the allowance from another's load
_LOAD_LOCK = threading.Lock()


@dataclass
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    layout: str  # "robustness" or "torchvision"
    file_format: str  # "safetensors" or "torch"
    epoch: int | None = None


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter and persistent buffer of ResNet50 with its shape (built on the meta device)."""
    with torch.device("meta"):
        model = ResNet50()
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ResNet-50 state dict stored in `path`, with torchvision key names, validated."""
    return read_weights(path).state_dict


def read_weights(path: str | os.PathLike) -> LoadedWeights:
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} not found; {MISSING_WEIGHTS_HELP}")
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file")
    if _looks_like_safetensors(path):
        raw, file_format = _read_safetensors(path), "safetensors"
    else:
        raw, file_format = _read_torch(path), "torch"
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    tensors = _unwrap(raw, path)
    state, layout = _to_torchvision_names(tensors, path)
    state = _validate(state, path)
    return LoadedWeights(state, layout, file_format, epoch if isinstance(epoch, int) else None)


def _looks_like_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length, then a JSON object.
    if path.suffix.lower() == ".safetensors":
        return True
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < path.stat().st_size


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError):
        raise WeightsError(
            f"{path} is not a readable safetensors file: damaged or incomplete "
            f"({path.stat().st_size:,} bytes; an interrupted download?); download it again"
        ) from None


def _harmless_globals() -> list:
    """numpy's scalar constructor, under every name a checkpoint may use for it, with what it
    needs to rebuild a float64 (numpy.dtype and, on numpy >= 1.25, its float64 dtype class)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed.append((dtypes.Float64DType, "numpy.dtypes.Float64DType"))
    return allowed


def _not_a_checkpoint(path: Path) -> WeightsError:
    """Why `path` is not a torch file, said from its first bytes (no internal exception text)."""
    what = "not a readable PyTorch checkpoint or safetensors file"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as e:
        return WeightsError(f"{path} cannot be read ({e.strerror or type(e).__name__})")
    if size == 0:
        return WeightsError(f"{path} is {what}: it is empty (0 bytes); download it again")
    if head.startswith((b"PK\x03\x04", b"\x80")):  # zip / legacy pickle
        return WeightsError(
            f"{path} is {what}: it starts like a PyTorch checkpoint but is damaged or incomplete "
            f"({size:,} bytes; an interrupted download?); download it again"
        )
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip() and all(c.isprintable() or c in "\r\n\t" for c in text):
        start = " ".join(text.split())[:40]
        page = " (an HTML page: a download error?)" if "<html" in text.lower() else ""
        return WeightsError(f"{path} is {what}: it is a text file{page}, starting {start!r}")
    return WeightsError(f"{path} is {what} ({size:,} bytes of another format)")


def _read_torch(path: Path) -> object:
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(_harmless_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = _GLOBAL_RE.search(str(e))
        if blocked is None:
            raise _not_a_checkpoint(path) from None
        raise WeightsError(
            f"refusing to read {path}: it holds Python objects that would have to be executed "
            f"to be read (here {blocked.group(1)}), so reading it could run arbitrary code. If "
            "you trust the file, convert it elsewhere: load it with torch.load(..., "
            "weights_only=False), save only its tensors with safetensors.torch.save_file("
            "state_dict, 'weights.safetensors') and pass that file with --weights"
        ) from None
    except Exception:  # noqa: BLE001 - torch raises many types on damaged files
        raise _not_a_checkpoint(path) from None


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(raw, dict):
        raise WeightsError(
            f"{path} holds a {type(raw).__name__}, not a state dict of named tensors"
        )
    for key in ("model", "state_dict"):
        if key in raw and _is_tensor_dict(raw[key]):
            raw = raw[key]
            break
    if not _is_tensor_dict(raw):
        keys = ", ".join(sorted(map(str, raw))[:6]) or "nothing"
        raise WeightsError(f"{path} holds no tensors a ResNet-50 could use (top-level keys: {keys})")
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def _strip_common_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _to_torchvision_names(
    tensors: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, torch.Tensor], str]:
    state = _strip_common_prefix(tensors, "module.")
    has_model = any(k.startswith(_ROBUSTNESS_MODEL) for k in state)
    has_robust_parts = any(k.startswith(_ROBUSTNESS_IGNORED) for k in state)
    if not (has_model and has_robust_parts):
        return _strip_common_prefix(state, _ROBUSTNESS_MODEL), "torchvision"
    _check_normalizer(state, path)
    model = {
        k[len(_ROBUSTNESS_MODEL):]: v for k, v in state.items() if k.startswith(_ROBUSTNESS_MODEL)
    }
    # torchvision ResNets inside the robustness library are sometimes wrapped once more.
    return _strip_common_prefix(model, "module."), "robustness"


def _check_normalizer(state: dict[str, torch.Tensor], path: Path) -> None:
    # ResNet50 normalises with ImageNet statistics; a checkpoint trained with others would be
    # fed wrongly scaled inputs, so it is refused rather than silently misused.
    for key, expected in ((_NORMALIZER_MEAN, IMAGENET_MEAN), (_NORMALIZER_STD, IMAGENET_STD)):
        if key not in state:
            continue
        got = state[key].detach().float().flatten()
        if got.numel() != 3 or not torch.allclose(got, torch.tensor(expected), atol=1e-3):
            values = ", ".join(f"{v:.3f}" for v in got.tolist()[:6])
            wanted = ", ".join(f"{v:.3f}" for v in expected)
            raise WeightsError(
                f"{path} was trained with input {key.split('_')[-1]} ({values}), not ImageNet's "
                f"({wanted}); MAGIC's classifier needs an ImageNet ResNet-50"
            )


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _validate(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    shapes = expected_shapes()
    missing = [k for k in shapes if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in shapes]
    mismatched = [
        f"{k} is {_shape(state[k].shape)}, needs {_shape(shapes[k])}"
        for k in shapes
        if k in state and tuple(state[k].shape) != shapes[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {_count(missing, 'tensor')} ({_names(missing)})")
    if unexpected:
        problems.append(f"{_count(unexpected, 'unexpected tensor')} ({_names(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape ({_names(mismatched, 3)})")
    if problems:
        raise WeightsError(
            f"{path} does not hold ImageNet ResNet-50 weights: " + "; ".join(problems)
        )
    out: dict[str, torch.Tensor] = {}
    for name in shapes:
        if name.endswith(_OPTIONAL_SUFFIX):
            out[name] = state.get(name, torch.tensor(0)).to(torch.long)
            continue
        t = state[name]
        if not t.is_floating_point():
            raise WeightsError(f"{path}: {name} holds {t.dtype} values, expected floating point")
        out[name] = t.to(torch.float32)
        if not torch.isfinite(out[name]).all():
            raise WeightsError(f"{path}: {name} contains NaN or infinite values")
    return out


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _shape(shape: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"
