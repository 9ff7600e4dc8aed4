"""The frozen ImageNet ResNet-50 that MAGIC inverts: where its weights come from, and its label."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch

from magic_server.checkpoints import MISSING_WEIGHTS_HELP, WeightsError, read_weights
from magic_server.engine.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50, frozen
from magic_server.engine.resnet import untrained_resnet50 as engine_untrained_resnet50

UNTRAINED = "untrained"
UNTRAINED_LABEL = "untrained (random weights)"
DEFAULT_LABEL = "quasi-robust ResNet-50 (l2, eps 0.05)"
UNTRAINED_SEED = 0


def untrained_resnet50() -> ResNet50:
    """A ResNet-50 with seeded random weights: the same on every run, without touching global RNG.

    See engine.resnet.untrained_resnet50 for why its feature scale is calibrated."""
    return engine_untrained_resnet50(UNTRAINED_SEED)


def is_untrained(label: str) -> bool:
    return label.startswith(UNTRAINED)


def _installed_or_downloaded(
    allow_download: bool, progress: Callable | None
) -> tuple[Path, str]:
    weights_store = importlib.import_module("magic_server.weights_store")
    label = getattr(weights_store, "WEIGHTS_LABEL", DEFAULT_LABEL)
    path = weights_store.installed_weights_path()
    if path is not None:
        return Path(path), label
    if not allow_download:
        raise WeightsError(f"the classifier weights are not installed; {MISSING_WEIGHTS_HELP}")
    try:
        return Path(weights_store.download_weights(progress=progress)), label
    except WeightsError:
        raise
    except OSError as e:
        raise WeightsError(f"could not download the classifier weights ({e}); "
                           f"{MISSING_WEIGHTS_HELP}") from None


def load_classifier(
    weights: str | None,
    device: torch.device | str = "cpu",
    *,
    allow_download: bool = True,
    progress: Callable | None = None,
) -> tuple[ResNet50, str]:
    """(frozen ResNet50 on `device`, human label of its weights).

    weights: None for the installed weights (downloaded first if allowed and missing), a path to
    a checkpoint file, or "untrained" for seeded random weights (explicit opt-in only).
    """
    if weights is not None and str(weights).strip().lower() == UNTRAINED:
        return frozen(untrained_resnet50()).to(device), UNTRAINED_LABEL
    if weights is None:
        path, label = _installed_or_downloaded(allow_download, progress)
    else:
        path = Path(weights).expanduser()
        label = f"ResNet-50 from {path.name}"
    loaded = read_weights(path)
    if weights is not None and loaded.layout == "robustness":
        label = f"robust ResNet-50 from {path.name}"
    with torch.device("meta"):
        model = ResNet50()
    model.load_state_dict(loaded.state_dict, strict=True, assign=True)
    # Non-persistent buffers (input normalisation) are not in the file: rebuild them for real.
    model.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    model.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    left_on_meta = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    left_on_meta += [n for n, t in model.named_buffers() if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"ResNet50 tensors not filled from the checkpoint: {left_on_meta}")
    return frozen(model).to(device), label
