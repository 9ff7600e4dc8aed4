"""The captured judgement (the GPU fast path, engine/capture.py), checked on the CPU: the
compiled classifier step gives the eager result, a failed capture falls back and says so,
and `auto` leaves short runs and CPUs eager."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from magic_server.engine import capture
from magic_server.engine.api import SynthesisOptions
from magic_server.engine.previews import PreviewCopies
from magic_server.engine.synthesis import Engine


def scene():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    source = np.zeros((48, 48), bool)
    source[10:25, 10:25] = True
    return img, source, np.roll(source, 15, axis=1)


OPTIONS = SynthesisOptions(samples=1, preset="paper", iterations=4, resolution=32, seed=1)


def summary(record: dict) -> dict:
    return {k: record[k] for k in ("captured", "failure", "mode", "reason")}


def test_the_captured_step_gives_the_eager_result(classifier):
    """torch.compile traces the classifier and mask network with their gradient (AOTAutograd;
    the 'aot_eager' backend runs the traced graphs without generating kernels, which a CPU
    test can afford): same seed, same pixels as the eager step."""
    eager = Engine(classifier, "cpu", "untrained", capture_mode="eager")
    expected = eager.synthesize(*scene(), OPTIONS)
    assert summary(eager.last_capture) == {"captured": False, "failure": None, "mode": "eager",
                                           "reason": "capture mode eager"}
    captured = Engine(classifier, "cpu", "untrained", capture_mode="compile",
                      capture_backend="aot_eager")
    got = captured.synthesize(*scene(), OPTIONS)
    assert captured.last_capture["captured"] is True and captured._captured.calls == 4
    assert np.abs(got.images[0].astype(int) - expected.images[0].astype(int)).max() <= 1
    assert set(got.losses) == set(expected.losses)


def test_the_channels_last_step_is_captured_and_gives_the_eager_result(classifier):
    """The CUDA layout (NHWC classifier and x', forced here on the CPU): x' is made
    channels-last before it is marked for the gradient, so the tensor differentiated is the
    one the compiled graph uses (made after, torch.compile refused it: "One of the
    differentiated Tensors appears to not have been used in the graph", issue 18)."""
    net = copy.deepcopy(classifier)
    eager = Engine(net, "cpu", "untrained", capture_mode="eager", channels_last=True)
    expected = eager.synthesize(*scene(), OPTIONS)
    assert next(eager.classifier.parameters()).is_contiguous(memory_format=torch.channels_last)
    captured = Engine(net, "cpu", "untrained", capture_mode="compile",
                      capture_backend="aot_eager", channels_last=True)
    got = captured.synthesize(*scene(), OPTIONS)
    assert summary(captured.last_capture) == {"captured": True, "failure": None,
                                              "mode": "compile", "reason": "capture mode compile"}
    assert captured._captured.calls == 4
    assert np.abs(got.images[0].astype(int) - expected.images[0].astype(int)).max() <= 1


def test_marking_x_for_the_gradient_before_the_layout_change_is_what_compile_refuses():
    """The five-line cause of the capture failure, kept as a check that the CPU reproduces
    it: a conv net, x' marked for the gradient, then made channels-last."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 3)).to(memory_format=torch.channels_last)

    def step(x, after):
        if after:
            seen = x.detach().requires_grad_(True).contiguous(memory_format=torch.channels_last)
        else:
            seen = x.contiguous(memory_format=torch.channels_last).detach().requires_grad_(True)
        return torch.autograd.grad(net(seen).square().sum(), seen)[0]

    x = torch.randn(2, 3, 12, 12)
    fixed = torch.compile(step, backend="aot_eager", dynamic=False)(x, False)
    assert torch.allclose(fixed, step(x, False), atol=1e-5)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.compile(step, backend="aot_eager", dynamic=False)(x, True)


def test_a_failed_capture_runs_eager_and_logs_why(classifier, monkeypatch, caplog):
    def broken_compile(fn, **options):
        def compiled(*args):
            raise RuntimeError("graph capture is not supported here\nmore detail")
        return compiled

    monkeypatch.setattr(capture.torch, "compile", broken_compile)
    eager = Engine(classifier, "cpu", "untrained", capture_mode="eager")
    expected = eager.synthesize(*scene(), OPTIONS)
    engine = Engine(classifier, "cpu", "untrained", capture_mode="compile")
    with caplog.at_level(logging.WARNING, logger="magic_server"):
        got = engine.synthesize(*scene(), OPTIONS)
    assert np.array_equal(got.images[0], expected.images[0])
    assert engine.last_capture["captured"] is False
    assert engine.last_capture["failure"] == "RuntimeError: graph capture is not supported here"
    warnings = [r.getMessage() for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warnings) == 1 and "runs eager" in warnings[0]


def test_auto_captures_whole_iterations_of_long_enough_levels_on_a_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert capture.decide("auto", cuda, capture.GRAPH_MIN_ITERATIONS) == capture.Choice(
        "graph", f"auto: {capture.GRAPH_MIN_ITERATIONS} iterations on CUDA", "cuda-graph")
    assert capture.decide("auto", cuda, 30) == capture.Choice(
        "eager", f"auto: eager for 30 iterations (a capture pays from "
                 f"{capture.GRAPH_MIN_ITERATIONS})")
    assert capture.decide("auto", cpu, 18_000) == capture.Choice(
        "eager", "auto: eager on cpu (captures run on CUDA only)")
    assert capture.decide("eager", cuda, 18_000).how == "eager"
    assert capture.decide("compile", cpu, 1).how == "compile"
    assert capture.decide("graph", cpu, 1) == capture.Choice("graph", "capture mode graph",
                                                             "trace")
    assert capture.decide("graph", cuda, 1).backend == "cuda-graph"


def test_the_capture_mode_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.setenv(capture.CAPTURE_ENV, "eager")
    assert capture.resolve_mode(None) == "eager"
    assert capture.resolve_mode("compile") == "compile"
    monkeypatch.setenv(capture.CAPTURE_ENV, "fast")
    with pytest.raises(ValueError, match="'fast' is not one of auto, eager, compile, graph"):
        capture.resolve_mode(None)


def test_preview_copies_hand_out_the_latest_frames():
    copies = PreviewCopies(torch.device("cpu"))
    assert copies.collect() is None
    pixels = torch.linspace(0, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    copies.start(pixels, (4, 4))
    frames = copies.collect()
    assert [f.shape for f in frames] == [(4, 4, 3), (4, 4, 3)] and frames[0].dtype == np.uint8
    assert copies.collect() is None  # handed out once


def test_determinism_is_an_option_and_on_by_default(classifier, monkeypatch):
    """Same seed, same pixels costs cuDNN's fastest algorithms on CUDA; the engine keeps it
    by default, $MAGIC_DETERMINISTIC=0 (or deterministic=False) frees cuDNN, and describe()
    says which."""
    from magic_server.engine import synthesis

    monkeypatch.delenv(synthesis.DETERMINISTIC_ENV, raising=False)
    assert Engine(classifier, "cpu", "untrained").describe().deterministic is True
    monkeypatch.setenv(synthesis.DETERMINISTIC_ENV, "0")
    assert Engine(classifier, "cpu", "untrained").deterministic is False
    assert Engine(classifier, "cpu", "untrained", deterministic=True).deterministic is True
    monkeypatch.setenv(synthesis.DETERMINISTIC_ENV, "maybe")
    with pytest.raises(ValueError, match="MAGIC_DETERMINISTIC='maybe': use 1"):
        Engine(classifier, "cpu", "untrained")
