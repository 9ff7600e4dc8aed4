"""The whole iteration captured and replayed (engine/iteration_capture.py), checked on the CPU
with the trace stand-in for a CUDA graph: it freezes every host value a step read while it was
recorded, as a CUDA graph does, so a step that replays right here replays right on a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from magic_server.engine import capture
from magic_server.engine.adam import Adam
from magic_server.engine.api import SynthesisOptions
from magic_server.engine.iteration_capture import WARMUP_CALLS, CapturedStep
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.presets import Schedule
from magic_server.engine.synthesis import Engine


def scene(size=56):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    source = np.zeros((size, size), bool)
    source[10:28, 10:28] = True
    return img, source, np.roll(source, 18, axis=1)


def run(classifier, mode, options, **kwargs):
    engine = Engine(classifier, "cpu", "untrained", capture_mode=mode)
    return engine, engine.synthesize(*scene(), options, **kwargs)


def test_the_papers_whole_iteration_replayed_gives_the_eager_pixels(classifier):
    """Every term of the paper's objective (classifier, feature statistics, mask network,
    critic with its own WGAN-GP step, priors, keep) and the update of x', captured once and
    replayed: the same pixels as eager, bit for bit; the critic joins mid-level, so three steps
    are captured (update, critic, update with the critic's term)."""
    options = SynthesisOptions(samples=2, preset="paper", iterations=20, resolution=32, seed=5)
    schedule = Schedule(20, 2, 8, 4)
    _, expected = run(classifier, "eager", options, schedule=schedule)
    engine, got = run(classifier, "graph", options, schedule=schedule)
    assert np.array_equal(got.images[0], expected.images[0])
    assert np.array_equal(got.images[1], expected.images[1])
    assert got.losses == pytest.approx(expected.losses, rel=1e-6)
    record = engine.last_capture
    assert record["captured"] is True and record["failure"] is None
    (level,) = record["levels"]
    assert level["how"] == "graph" and level["backend"] == "trace"
    steps = level["steps"]
    assert set(steps) == {"update", "critic", "update with critic"}
    # critic: 10 warm-start steps + 11 more; each step: 2 warm-up calls and the capture first
    assert steps["critic"]["replays"] == 21 - WARMUP_CALLS - 1
    assert steps["update with critic"]["replays"] == 12 - WARMUP_CALLS - 1
    assert all(step["failure"] is None for step in steps.values())


def test_a_product_levels_iteration_replayed_gives_the_eager_pixels(classifier):
    """A product preset's levels: the patch term reads the latest matching's target through
    the step's inputs, so a replay between two matchings follows the new target."""
    options = SynthesisOptions(samples=1, preset="tiny", iterations=48, seed=2)
    _, expected = run(classifier, "eager", options)
    engine, got = run(classifier, "graph", options)
    assert np.array_equal(got.images[0], expected.images[0])
    levels = engine.last_capture["levels"]
    assert len(levels) > 1
    replayed = [level["steps"]["update"]["replays"] for level in levels]
    assert sum(replayed) > 0 and engine.last_capture["failure"] is None


def test_re_weighted_terms_keep_a_level_eager_and_say_why(classifier):
    """Judged terms weighted as shares of the patch term's pull are re-weighted at every
    matching, which a captured step cannot follow: those levels run eager, with the reason."""
    options = SynthesisOptions(samples=1, preset="tiny", iterations=24, seed=2)
    weights = LossWeights.product(True)
    weights = LossWeights(**{**weights.__dict__, "classifier": 0.1})
    engine, _ = run(classifier, "graph", options, weights=weights)
    for level in engine.last_capture["levels"]:
        assert level["how"] == "eager"
        assert level["reason"] == ("capture mode graph; eager: the judged terms are re-weighted "
                                   "at every patch matching")


def test_adam_does_torch_adams_arithmetic_with_its_numbers_on_the_device():
    torch.manual_seed(0)
    start = torch.randn(2, 3, 9, 11)
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    mine = Adam([ours], lr=0.1, betas=(0.5, 0.9))
    reference = torch.optim.Adam([theirs], lr=0.1, betas=(0.5, 0.9), eps=1e-8)
    for step in range(60):
        lr = 0.2 * (step + 1) / 60
        gradient = torch.randn_like(start)
        mine.set_lr(lr)
        mine.step([gradient])
        reference.param_groups[0]["lr"] = lr
        theirs.grad = gradient.clone()
        reference.step()
    assert torch.equal(ours, theirs.detach())
    assert mine.lr.device == start.device and float(mine.steps) == 60


class Counter:
    """A toy step over static state: x += rate * input."""

    def __init__(self, host_rate: bool = False, host_read: bool = False) -> None:
        self.x = torch.zeros(4)
        self.rate = torch.ones(())
        self.calls = 0
        self.host_rate, self.host_read = host_rate, host_read

    def step(self, value: torch.Tensor) -> tuple[torch.Tensor]:
        self.calls += 1
        # a host number (frozen once recorded) instead of the device tensor
        rate = float(self.calls) if self.host_rate else self.rate
        if self.host_read:
            rate = rate * float(value.sum())  # the step asks the device for a value
        self.x.add_(value * rate)
        return (self.x.sum(),)


def drive(counter: Counter, captured, calls: int) -> list[float]:
    totals = []
    for i in range(calls):
        counter.rate.fill_(i + 1)
        (total,) = captured(torch.full((4,), float(i)))
        totals.append(float(total))
    return totals


def uncaptured(calls: int, **kwargs) -> list[float]:
    counter = Counter(**kwargs)
    return drive(counter, counter.step, calls)


def test_a_captured_step_replays_with_each_calls_inputs_and_state():
    counter = Counter()
    captured = CapturedStep(counter.step, lambda: [counter.x], "trace", "count")
    got = drive(counter, captured, 8)
    assert got == uncaptured(8) == np.cumsum([4.0 * i * (i + 1) for i in range(8)]).tolist()
    assert captured.active and captured.replays == 8 - WARMUP_CALLS - 1
    assert counter.calls == WARMUP_CALLS + 2  # warm-up, the recording, the checked replay


def test_a_step_that_freezes_a_host_value_is_caught_and_runs_eager(caplog):
    """A CUDA graph would replay the host number the step read while captured: the checked
    first replay differs from the eager step, so the step runs eager from then on, with the
    same results as if it had never been captured."""
    counter = Counter(host_rate=True)
    captured = CapturedStep(counter.step, lambda: [counter.x], "trace", "count")
    with caplog.at_level(logging.WARNING, logger="magic_server"):
        got = drive(counter, captured, 6)
    assert got == uncaptured(6, host_rate=True)
    assert not captured.active and "differs from the eager one" in captured.failure
    assert any("capture of count failed" in r.getMessage() for r in caplog.records)


def test_a_step_that_reads_the_device_on_the_host_is_refused():
    counter = Counter(host_read=True)
    captured = CapturedStep(counter.step, lambda: [counter.x], "trace", "count")
    got = drive(counter, captured, 5)
    assert got == uncaptured(5, host_read=True)
    assert captured.failure == ("CaptureError: the step reads the device on the host "
                                "(_local_scalar_dense)")


def test_a_capture_that_fails_half_way_changes_nothing():
    """A trace runs what it records: a failure after the step wrote its state is undone, and
    the call runs eager once."""
    counter = Counter()
    calls = {"n": 0}

    def step(value):
        calls["n"] += 1
        out = counter.step(value)
        if calls["n"] == WARMUP_CALLS + 1:
            raise RuntimeError("cannot record this")
        return out

    captured = CapturedStep(step, lambda: [counter.x], "trace", "count")
    got = drive(counter, captured, 5)
    assert got == np.cumsum([4.0 * i * (i + 1) for i in range(5)]).tolist()
    assert captured.failure == "RuntimeError: cannot record this"


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="'cuda' is not one of cuda-graph, trace"):
        CapturedStep(lambda: (), list, "cuda", "x")
    assert capture.CAPTURE_MODES == ("auto", "eager", "compile", "graph")
