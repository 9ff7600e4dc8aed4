"""The engine end to end on small synthetic scenes (CPU, untrained classifier)."""

from __future__ import annotations

import inspect
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from scenes import iou, noise_move_scene, red_disk_scene, red_pixels

from magic_server.engine.api import (
    Cancelled,
    EditEngine,
    EngineDescription,
    EngineInputError,
    SynthesisOptions,
)
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.mask_net import binary_fractions, train_mask_net
from magic_server.engine.tensors import Normaliser, image_to_tensor, mask_to_tensor


@pytest.fixture(scope="module")
def scene():
    return red_disk_scene(64)


def quick(**kw) -> SynthesisOptions:
    base = {"samples": 2, "preset": "tiny", "iterations": 6, "resolution": 32, "seed": 3,
            "refine": False}
    return SynthesisOptions(**{**base, **kw})


def test_mask_net_learns_the_source_mask(scene):
    img, source, _ = scene
    z = Normaliser(torch.device("cpu")).normalise(image_to_tensor(img, (64, 64), torch.device("cpu")))
    y = mask_to_tensor(source, (64, 64), torch.device("cpu"))
    net = train_mask_net(z, binary_fractions(y), steps=120, gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = (net(z).argmax(1)[0] == 1).numpy()
    assert iou(predicted, source) >= 0.9


def test_synthesized_object_follows_a_moved_guide(engine, scene):
    """The paper's mask control with every term but the classifier's: an untrained
    classifier's features carry no semantics, so its two terms are switched off here (the
    next test keeps them)."""
    img, source, guide = scene
    # Judged by colour thresholding, not by the engine's own mask network.
    assert iou(red_pixels(img), source) > 0.95
    weights = replace(LossWeights(), classifier=0.0, feature_stats=0.0)
    result = engine.synthesize(img, source, guide,
                               SynthesisOptions(samples=2, preset="paper", iterations=300,
                                                resolution=64, seed=0), weights=weights)
    print("\nmask control, IoU with the guide:", [round(iou(red_pixels(o), guide), 3)
                                                   for o in result.images])
    for out in result.images:
        assert out.shape == img.shape and out.dtype == np.uint8
        assert iou(red_pixels(out), guide) >= 0.8
        assert iou(red_pixels(out), source) < 0.1


def test_full_objective_with_an_untrained_classifier_still_moves_the_object(engine, scene):
    img, source, guide = scene
    result = engine.synthesize(img, source, guide,
                               SynthesisOptions(samples=2, preset="paper", iterations=300,
                                                resolution=64, seed=0))
    print("\nfull objective, IoU with the guide:", [round(iou(red_pixels(o), guide), 3)
                                                     for o in result.images])
    for out in result.images:
        assert iou(red_pixels(out), guide) >= 0.6
        assert iou(red_pixels(out), source) < 0.1


def test_same_seed_repeats_and_different_seeds_differ(engine, scene):
    img, source, guide = scene
    first = engine.synthesize(img, source, guide, quick(seed=5))
    a = first.images
    b = engine.synthesize(img, source, guide, quick(seed=5)).images
    c = engine.synthesize(img, source, guide, quick(seed=6)).images
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # judged where the synthesis decides: the old and the new place (everything else is the
    # photo in every sample, and the edit region's thin rim round them is fused into it)
    places = (source | guide) & first.touched
    assert all(np.abs(x.astype(int) - y)[places].mean() > 2 for x, y in zip(a, c))
    assert np.abs(a[0].astype(int) - a[1])[places].mean() > 2  # samples in one batch differ


def test_cancel_stops_within_one_iteration(engine, scene):
    img, source, guide = scene
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(p):
        if p.stage == "synthesis":
            seen.append(p.iteration)
            if p.iteration == 3:
                cancel.set()

    with pytest.raises(Cancelled):
        engine.synthesize(img, source, guide, quick(iterations=50), on_progress, cancel)
    assert seen == [1, 2, 3]


def test_cancel_during_mask_net_training(engine, scene):
    img, source, guide = scene
    cancel = threading.Event()
    stages: list[str] = []

    def on_progress(p):
        stages.append(p.stage)
        cancel.set()

    with pytest.raises(Cancelled):
        engine.synthesize(img, source, guide, quick(preset="paper"), on_progress, cancel)
    assert stages == ["mask-net"]


@pytest.mark.parametrize("preset, terms", [
    ("paper", {"classifier", "feature_stats", "mask", "critic", "total"}),
    ("tiny", {"patch", "total"}),
])
def test_progress_reports_losses_and_previews(engine, scene, preset, terms):
    img, source, guide = scene
    events = []
    result = engine.synthesize(img, source, guide, quick(iterations=10, preview_every=5,
                                                         preview_size=16, preset=preset),
                               events.append)
    start = events[0]  # the start image, shown before the mask network and the iterations
    assert start.iteration == 0 and start.stage == ("mask-net" if preset == "paper"
                                                    else "synthesis")
    assert len(start.previews) == 2 and max(start.previews[0].shape[:2]) == 16
    synth = [e for e in events[1:] if e.stage != "mask-net"]
    assert [e.iteration for e in synth] == list(range(1, 11))
    assert all(e.total == 10 for e in synth)
    previews = [e for e in synth if e.previews]
    assert [e.iteration for e in previews] == [5, 10]
    assert all(len(e.previews) == 2 and max(e.previews[0].shape[:2]) == 16 for e in previews)
    assert terms <= set(synth[-1].losses)
    assert synth[-1].eta_s == 0
    assert result.iterations == 10 and len(result.images) == 2
    assert result.seeds == [3, 4]


def test_the_classifier_is_never_trained(engine, scene):
    img, source, guide = scene
    before = {k: v.clone() for k, v in engine.classifier.state_dict().items()}
    engine.synthesize(img, source, guide, quick())
    assert all(p.grad is None and not p.requires_grad for p in engine.classifier.parameters())
    after = engine.classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_results_have_the_input_size_for_non_square_images(engine):
    img, source, guide = noise_move_scene(40, 90, slice(10, 25), slice(10, 30), 40, seed=1,
                                          high=255)
    result = engine.synthesize(img, source, guide, quick(samples=1))
    assert result.images[0].shape == (40, 90, 3)


def test_bad_inputs_are_refused_with_clear_messages(engine, scene):
    img, source, guide = scene
    empty = np.zeros_like(source)
    with pytest.raises(EngineInputError, match="source mask is empty"):
        engine.synthesize(img, empty, guide, quick())
    with pytest.raises(EngineInputError, match="guide mask is empty"):
        engine.synthesize(img, source, empty, quick())
    with pytest.raises(EngineInputError, match="whole image"):
        engine.synthesize(img, np.ones_like(source), guide, quick())
    with pytest.raises(EngineInputError, match="32x16"):
        engine.synthesize(img, source[:16, :32], guide, quick())
    with pytest.raises(EngineInputError, match="unknown mode"):
        engine.synthesize(img, source, guide, quick(mode="teleport"))


def test_remove_mode_accepts_an_empty_guide(engine, scene):
    img, source, _ = scene
    result = engine.synthesize(img, source, np.zeros_like(source), quick(mode="remove"))
    assert len(result.images) == 2


def test_describe_reports_device_and_weights(engine):
    info = engine.describe()
    assert isinstance(info, EngineDescription)
    assert info.device == "cpu" and info.device_name == "CPU" and info.weights_loaded is False
    assert info.preset_iterations["paper"] == 18_000 and info.gpu_memory_mb is None
    assert info.weights_label == engine.weights_label


def _signature_of(kind: type, name: str) -> list[tuple[str, object, bool]]:
    params = list(inspect.signature(getattr(kind, name)).parameters.values())
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in params]


@pytest.mark.parametrize("kind", ["Engine", "FakeEngine"])
def test_the_engine_and_the_servers_stand_in_follow_one_interface(engine, kind):
    """EditEngine (engine/api.py) is what the server, the CLI and the benchmarks call: the
    real engine and the tests' stand-in both have its methods with its parameters, and
    describe() gives the one typed record."""
    from test_server_support import FakeEngine

    implementation = type(engine) if kind == "Engine" else FakeEngine
    instance = engine if kind == "Engine" else FakeEngine()
    assert isinstance(instance, EditEngine)
    for name in ("describe", "warm_up", "synthesize", "synthesize_layout"):
        wanted = _signature_of(EditEngine, name)
        got = _signature_of(implementation, name)
        # the real engine takes more keywords (weights, schedule...): all optional, after
        assert got[: len(wanted)] == wanted, (name, got)
        assert all(not required for _, _, required in got[len(wanted):]), (name, got)
    assert isinstance(instance.describe(), EngineDescription)
