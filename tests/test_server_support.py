"""Shared pieces of the server tests: a fast stand-in engine, free ports, a server in a thread
or in a subprocess, and request builders. Run as a script it is `magic-server` with the
stand-in engine (for the subprocess tests): python tests/test_server_support.py --bind ...
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from magic_protocol.client import JobRequest, RawImage
from magic_server.engine.api import (
    Cancelled,
    EngineDescription,
    Progress,
    SynthesisResult,
    check_inputs,
)

OOM_SEED = 666  # the stand-in engine raises a CUDA-style out-of-memory error for this seed
CRASH_SEED = 667  # ... and an unexpected exception for this one


class FakeEngine:
    """An EditEngine (engine/api.py), cheaply: `iterations` steps of `step_s` seconds; results are
    the inverted image (sample k: 255 - image, then + k)."""

    def __init__(self, step_s: float = 0.01, iterations: int = 10) -> None:
        self.step_s = step_s
        self.iterations = iterations
        self.device = "cpu"
        self.weights_label = "stand-in engine"
        self.calls = 0
        self.last_call: dict | None = None  # the arguments of the latest synthesize()

    def describe(self) -> EngineDescription:
        # no iteration counts: the server offers the presets without time estimates
        return EngineDescription(device="cpu", device_name="CPU", gpu_memory_mb=None,
                                 weights_label=self.weights_label, weights_loaded=False,
                                 preset_iterations={})

    def warm_up(self) -> None:
        pass

    def synthesize_layout(self, image, source_labels, target_labels, options,
                          on_progress=None, cancel=None, *, init_image=None) -> SynthesisResult:
        differ = source_labels != target_labels
        result = self.synthesize(image, differ, differ, options, on_progress, cancel,
                                 init_image=init_image)
        self.last_call.update(source_labels=source_labels, target_labels=target_labels)
        return result

    def synthesize(self, image, source_mask, guide_mask, options, on_progress=None,
                   cancel=None, *, init_image=None) -> SynthesisResult:
        self.calls += 1
        self.last_call = {"image": image, "source_mask": source_mask, "guide_mask": guide_mask,
                          "options": options, "init_image": init_image}
        options.validate()
        check_inputs(image, source_mask, guide_mask, allow_empty_guide=options.mode == "remove")
        if options.seed == OOM_SEED:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if options.seed == CRASH_SEED:
            raise ZeroDivisionError("stand-in engine bug")
        total = options.iterations or self.iterations
        t0 = time.monotonic()
        for i in range(1, total + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if self.step_s:
                time.sleep(self.step_s)
            previews = None
            if options.preview_every and i % options.preview_every == 0:
                previews = [np.full((12, 16, 3), i % 256, np.uint8)
                            for _ in range(options.samples)]
            if on_progress is not None:
                on_progress(Progress(i, total, time.monotonic() - t0, {"total": 1.0 / i},
                                     previews))
        inverted = 255 - image
        images = [inverted if k == 0 else inverted + np.uint8(k) for k in range(options.samples)]
        h, w = image.shape[:2]
        return SynthesisResult(images, [options.seed + k for k in range(options.samples)], 7,
                               total, time.monotonic() - t0, {"total": 0.5},
                               region=(0, 0, h, w))


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def make_inputs(w: int = 32, h: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    source = np.zeros((h, w), np.uint8)
    source[h // 4: h // 2, w // 4: w // 2] = 255
    guide = np.roll(source, w // 4, axis=1)
    return rgba, source, guide


def job_request(w: int = 32, h: int = 24, **params) -> tuple[JobRequest, np.ndarray]:
    rgba, source, guide = make_inputs(w, h)
    req = JobRequest(RawImage(w, h, 4, rgba.tobytes()), RawImage(w, h, 1, source.tobytes()),
                     RawImage(w, h, 1, guide.tobytes()), **params)
    return req, rgba


def as_array(img: RawImage) -> np.ndarray:
    return np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, img.channels)


class ThreadedServer:
    """A Server with the stand-in engine, its loop in a thread of the test process."""

    def __init__(self, engine: FakeEngine | None = None, addr: str | None = None,
                 **kwargs) -> None:
        from magic_server.serve.server import Server

        self.engine = engine or FakeEngine()
        self.address = addr or address()
        self.server = Server(self.engine, self.address, **kwargs)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "server loop did not stop"


def spawn_server(bind: str, *args: str, step_s: float = 0.01,
                 env: dict | None = None) -> subprocess.Popen:
    """Start this file as a magic-server process; returns once it printed its ready line."""
    cmd = [sys.executable, str(Path(__file__)), "--bind", bind, "--step-s", str(step_s), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, **(env or {})})
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _main() -> int:
    import argparse

    from magic_server.serve.command import main

    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--step-s", type=float, default=0.01)
    ours, rest = ap.parse_known_args()
    return main(rest, engine_factory=lambda _args: FakeEngine(step_s=ours.step_s))


if __name__ == "__main__":
    sys.exit(_main())
