"""GPU tests (`pytest -m gpu`; benchmarks/gpu_check.sh runs them on a lent GPU machine).

Deselected by default (pyproject's addopts `-m 'not gpu'`), and skipped when torch sees no
CUDA GPU: a small edit on cuda, deterministic for a seed; a job forced out of GPU memory
(capped with torch.cuda.set_per_process_memory_fraction) gets `out_of_memory`, its memory is
given back and the next job succeeds; with two GPUs, two workers run two jobs at once; the
captured (compiled) paper step runs, repeats for a seed and stays close to the eager one; the
classifier as the engine runs it judges like the CPU (tests/gpu_tolerance.py: bf16/TF32).
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
import torch
from gpu_tolerance import judgement_differs
from test_server_support import ThreadedServer, as_array

from magic_protocol.client import JobFailed, JobRequest, MagicClient, RawImage
from magic_protocol.protocol import ErrorCode
from magic_server.engine.api import SynthesisOptions
from magic_server.engine.presets import Schedule
from magic_server.engine.synthesis import Engine
from magic_server.weights.classifier import load_classifier

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

W, H = 96, 72
MB = 2**20


def cuda_engine(index: int = 0) -> Engine:
    model, label = load_classifier("untrained", "cpu")
    engine = Engine(model, torch.device("cuda", index), label)
    engine.warm_up()
    return engine


def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    source = np.zeros((H, W), bool)
    source[20:44, 14:40] = True
    guide = np.roll(source, 30, axis=1)
    return image, source, guide


def request(**params) -> JobRequest:
    image, source, guide = inputs()
    rgba = np.dstack([image, np.full((H, W), 255, np.uint8)])
    params = {"mode": "move", "preset": "tiny", "samples": 1, "resolution": 64, **params}
    return JobRequest(RawImage(W, H, 4, rgba.tobytes()),
                      RawImage(W, H, 1, (source * 255).astype(np.uint8).tobytes()),
                      RawImage(W, H, 1, (guide * 255).astype(np.uint8).tobytes()), **params)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return cuda_engine(0)


def test_small_edit_on_cuda_is_deterministic_for_a_seed(engine):
    image, source, guide = inputs()

    def edit(seed: int) -> list[np.ndarray]:
        options = SynthesisOptions(samples=2, preset="tiny", iterations=6, resolution=64,
                                   seed=seed, mode="move")
        return engine.synthesize(image, source, guide, options).images

    first, again, other = edit(3), edit(3), edit(4)
    assert engine.device.type == "cuda" and torch.cuda.max_memory_allocated(engine.device) > 0
    assert all(img.shape == (H, W, 3) and img.dtype == np.uint8 for img in first)
    assert not np.array_equal(first[0], image)  # an edit happened
    for a, b in zip(first, again):
        assert np.array_equal(a, b), (
            f"same seed, same GPU, different result: {np.count_nonzero(a != b)} values differ")
    assert not np.array_equal(first[0], other[0])  # another seed, another result


def test_the_engines_classifier_on_cuda_judges_like_the_cpu():
    """The classifier as the engine runs it on CUDA (channels-last, bf16 autocast, TF32) against
    the CPU's float32: the same top-5 classes and cosine >= 0.999 (tests/gpu_tolerance.py),
    not atol 1e-3, which bf16/TF32 do not keep."""
    model, label = load_classifier("untrained", "cpu")
    x = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = copy.deepcopy(model)(x)
    engine = Engine(model, "cuda", label)
    with torch.no_grad(), engine._autocast():
        seen = x.to(engine.device).contiguous(memory_format=torch.channels_last)
        got = engine.classifier(seen).float().cpu()
    problem = judgement_differs(got, expected)
    assert problem is None, problem


def test_out_of_memory_job_is_reported_memory_freed_next_job_succeeds(engine):
    device = engine.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    baseline = torch.cuda.memory_allocated(device)
    cap = torch.cuda.memory_reserved(device) + 2048 * MB  # far below what the big job needs
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    try:
        with ThreadedServer(engine) as srv, MagicClient(srv.address, timeout_s=60,
                                                        heartbeat_s=0.5) as c:
            # the paper's objective (a classifier forward and backward every iteration) on
            # 16 samples at 1024 px: tens of GB of activations
            big = request(preset="paper", samples=16, resolution=1024, iterations=2)
            t0 = time.monotonic()
            with pytest.raises(JobFailed) as info:
                c.submit(big)
            assert info.value.code == ErrorCode.OUT_OF_MEMORY, info.value
            assert "ran out of memory" in str(info.value) and str(device) in str(info.value)
            assert time.monotonic() - t0 < 60
            torch.cuda.synchronize(device)
            after = torch.cuda.memory_allocated(device)
            assert after <= baseline + 64 * MB, (baseline / MB, after / MB)
            assert torch.cuda.memory_reserved(device) <= cap
            result = c.submit(request(iterations=3, seed=1))
            out = as_array(result.images[0])
            assert out.shape == (H, W, 3)
            assert c.status()["workers"][0]["state"] == "idle"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpu_workers_run_two_jobs_at_once():
    engines = [cuda_engine(0), cuda_engine(1)]
    seen: dict[int, list[tuple[str, float]]] = {1: [], 2: []}
    done: dict[int, object] = {}
    with ThreadedServer(engines) as srv:
        def run(seed: int) -> None:
            with MagicClient(srv.address, timeout_s=60, heartbeat_s=0.5) as c:
                done[seed] = c.submit(request(seed=seed, samples=3),
                                      on_event=lambda e: seen[seed].append(
                                          (e.kind, time.monotonic())))

        threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        with MagicClient(srv.address, timeout_s=10) as c:
            workers = c.handshake().raw["workers"]
    assert sorted(done) == [1, 2]
    assert [w["device"] for w in workers] == ["cuda:0", "cuda:1"]
    first = {k: min(t for kind, t in seen[k] if kind == "progress") for k in (1, 2)}
    end = {k: max(t for _, t in seen[k]) for k in (1, 2)}
    assert first[1] < end[2] and first[2] < end[1]


def test_the_captured_paper_step_runs_on_cuda_and_repeats_for_a_seed():
    """torch.compile ("reduce-overhead": CUDA graphs) captures the classifier's judgement; it
    must really be captured here (a fallback would be logged, and this test says so), give
    the same pixels twice for one seed, and stay close to the eager step (bf16 autocast)."""
    model, label = load_classifier("untrained", "cpu")
    image, source, guide = inputs()
    options = SynthesisOptions(samples=2, preset="paper", iterations=30, resolution=96, seed=4)
    eager = Engine(model, "cuda", label, capture_mode="eager")
    expected = eager.synthesize(image, source, guide, options).images
    engine = Engine(model, "cuda", label, capture_mode="compile")
    first = engine.synthesize(image, source, guide, options).images
    assert engine.last_capture["captured"], engine.last_capture["failure"]
    again = engine.synthesize(image, source, guide, options).images
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for got, want in zip(first, expected):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8


def test_the_whole_paper_iteration_runs_as_cuda_graphs_and_repeats_for_a_seed():
    """auto on CUDA: the critic's step and the update of x' captured whole as CUDA graphs
    (engine/iteration_capture.py). Every step must really replay (a fallback is reported with
    its reason, and this test says it), give the same pixels twice for one seed, and stay
    close to the eager iterations."""
    model, label = load_classifier("untrained", "cpu")
    image, source, guide = inputs()
    options = SynthesisOptions(samples=2, preset="paper", iterations=60, resolution=96, seed=4)
    schedule = Schedule(60, 2, 20, 4)
    eager = Engine(model, "cuda", label, capture_mode="eager")
    expected = eager.synthesize(image, source, guide, options, schedule=schedule).images
    engine = Engine(model, "cuda", label, capture_mode="auto")
    first = engine.synthesize(image, source, guide, options, schedule=schedule).images
    record = engine.last_capture
    assert record["captured"], record
    steps = record["levels"][0]["steps"]
    assert set(steps) == {"update", "critic", "update with critic"}, record
    assert all(s["replays"] > 0 and s["failure"] is None for s in steps.values()), record
    again = engine.synthesize(image, source, guide, options, schedule=schedule).images
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for got, want in zip(first, expected):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8
