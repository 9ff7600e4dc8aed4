"""The server with the REAL engine (untrained classifier, CPU, tiny settings): capabilities,
a complete job with previews, the engine's own input errors, and cancelling a real run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_server_support import ThreadedServer, as_array

from magic_protocol.client import JobCancelled, JobFailed, JobRequest, MagicClient, RawImage
from magic_protocol.protocol import ErrorCode

W, H = 64, 48


@pytest.fixture(scope="module")
def server():
    import torch

    from magic_server.engines import build_engine

    torch.manual_seed(0)
    engine = build_engine("untrained", "cpu")
    engine.warm_up()
    with ThreadedServer(engine) as srv:
        yield srv


def request(**params) -> tuple[JobRequest, np.ndarray]:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    source = np.zeros((H, W), np.uint8)
    source[12:30, 10:30] = 255
    guide = np.roll(source, 20, axis=1)
    params = {"mode": "move", "preset": "tiny", "resolution": 64, "samples": 2, **params}
    return JobRequest(RawImage(W, H, 4, rgba.tobytes()), RawImage(W, H, 1, source.tobytes()),
                      RawImage(W, H, 1, guide.tobytes()), **params), rgba


def test_capabilities_come_from_the_real_engine(server):
    with MagicClient(server.address, timeout_s=10) as c:
        info = c.handshake()
    assert info.device == "cpu" and info.weights_loaded is False
    assert info.weights_label.startswith("untrained")
    assert {"tiny", "quality", "paper"} <= set(info.presets)
    assert info.raw["preset_iterations"]["tiny"] > 0


def test_tiny_job_through_the_server(server):
    job, rgba = request(iterations=2, preview=True, seed=4)
    events = []
    with MagicClient(server.address, timeout_s=30, heartbeat_s=0.5) as c:
        result = c.submit(job, on_event=events.append)
    assert len(result.images) == 2 and result.seeds and len(result.seeds) == 2
    for img in result.images:
        assert (img.width, img.height, img.channels) == (W, H, 3)
    a, b = (as_array(img) for img in result.images)
    assert not np.array_equal(a, b)  # two samples, two different syntheses
    assert not np.array_equal(a, rgba[:, :, :3])  # synthesised, not an echo of the input
    progress = [e for e in events if e.kind == "progress"]
    assert {e.stage for e in progress} >= {"synthesis"}
    assert progress[-1].iteration == progress[-1].total == 2
    assert result.iterations == 2


def test_engine_input_error_and_cancel_with_the_real_engine(server):
    job, _ = request()
    job.guide_mask = RawImage(W, H, 1, bytes(W * H))  # empty guide for a move
    with MagicClient(server.address, timeout_s=30, heartbeat_s=0.5) as c:
        with pytest.raises(JobFailed) as info:
            c.submit(job)
        assert info.value.code == ErrorCode.ENGINE_INPUT
        job, _ = request()  # the full tiny preset: cancelled after its first progress event
        seen = []
        with pytest.raises(JobCancelled):
            c.submit(job, on_event=seen.append,
                     cancel_check=lambda: any(e.kind == "progress" for e in seen))
        t0 = time.monotonic()
        while c.status()["running"] is not None and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert c.status()["running"] is None


def test_real_engine_job_seeded_from_an_init_composite(server):
    """init frame + composite + refine off on the real engine: the edit region is synthesized
    and pasted back; pixels away from the masks (and outside the reported region) are the
    photo's, bit for bit."""
    job, rgba = request(iterations=2, resolution=32, samples=1, refine=False, seed=1)
    init = np.zeros((H, W, 4), np.uint8)
    init[12:30, 30:50] = rgba[12:30, 10:30]  # the object pasted at the guide...
    init[12:30, 30:50, 3] = 255  # ...opaque; transparent elsewhere = the photo
    job.init_image = RawImage(W, H, 4, init.tobytes())
    events = []
    with MagicClient(server.address, timeout_s=60, heartbeat_s=0.5) as c:
        result = c.submit(job, on_event=events.append)
    out = as_array(result.images[0])
    assert out.shape == (H, W, 3)
    top, left, bottom, right = result.region
    assert 0 <= top <= 12 and 30 <= bottom <= H and 0 <= left <= 10 and 50 <= right <= W
    near = np.zeros((H, W), bool)  # source (12..30, 10..30) and guide (12..30, 30..50), + 8 px
    near[12 - 8:30 + 8, 10 - 8:50 + 8] = True
    near[:top], near[bottom:], near[:, :left], near[:, right:] = False, False, False, False
    keep = ~near
    assert keep.sum() > 500
    assert np.array_equal(out[keep], rgba[:, :, :3][keep])  # bit-identical away from the edit
    assert not np.array_equal(out[12:30, 10:50], rgba[12:30, 10:50, :3])  # the edit happened
    stages = [e.stage for e in events if e.kind == "progress"]
    # the product presets need no mask network (engine/loss_weights.py: LossWeights.product)
    assert "mask-net" not in stages and "synthesis" in stages and "refine" not in stages
    # the same job with the masks only: the engine pastes the object's own pixels where the
    # guide puts it (engine/object_transfer.py), as the composite did: the same result
    job.init_image = None
    with MagicClient(server.address, timeout_s=60, heartbeat_s=0.5) as c:
        masks_only = c.submit(job)
    assert np.array_equal(as_array(masks_only.images[0]), out)
    assert any("masks only" in note for note in masks_only.notes)


def test_two_real_cpu_engines_run_two_jobs_side_by_side():
    """Two workers, each its own real engine (own classifier copy): two clients' jobs run at
    the same time, which their progress events show, and both results are syntheses."""
    import threading

    import torch

    from magic_server.engine.synthesis import Engine
    from magic_server.weights.classifier import load_classifier

    # Each job waits, inside its first progress report, until the other job has reached its
    # own: if the server ran the jobs one after the other the barrier would break and fail them.
    both_running = threading.Barrier(2, timeout=30)

    class MeetingEngine(Engine):
        def synthesize(self, *args, on_progress=None, **kwargs):
            met = []

            def progress(*a, **k):
                if not met:
                    met.append(both_running.wait())
                if on_progress is not None:
                    on_progress(*a, **k)
            return super().synthesize(*args, on_progress=progress, **kwargs)

    engines = []
    for _ in range(2):
        model, label = load_classifier("untrained", "cpu")
        engines.append(MeetingEngine(model, "cpu", label))
    assert engines[0].classifier is not engines[1].classifier
    seen: dict[int, list[tuple[str, float]]] = {1: [], 2: []}
    results: dict[int, object] = {}
    threads_before = torch.get_num_threads()
    with ThreadedServer(engines) as srv:
        def run(seed: int) -> None:
            job, _ = request(iterations=2, resolution=32, samples=1, refine=False, seed=seed)
            with MagicClient(srv.address, timeout_s=60, heartbeat_s=0.5) as c:
                results[seed] = c.submit(
                    job, on_event=lambda e: seen[seed].append((e.kind, time.monotonic())))

        threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert torch.get_num_threads() == threads_before
    assert sorted(results) == [1, 2]
    assert not both_running.broken  # both jobs were running at once
    assert all(any(kind == "progress" for kind, _ in seen[k]) for k in (1, 2))
    a, b = (as_array(results[k].images[0]) for k in (1, 2))
    assert a.shape == b.shape == (H, W, 3) and not np.array_equal(a, b)
