"""A worker that fails outside a job never leaves a client waiting (issue 18): its running and
queued jobs fail at once with an `internal` error naming the cause; the worker is replaced,
or, when it cannot be (its device binding fails) and no worker is left, the server refuses
new jobs with the reason. A bare `cuda` device is bound to its index."""

from __future__ import annotations

import logging
import threading
import time
import types

import numpy as np
import pytest
import torch
from test_server_support import FakeEngine, ThreadedServer, as_array, job_request

from magic_protocol.client import JobFailed, MagicClient
from magic_protocol.protocol import ErrorCode
from magic_server.serve import jobs, server
from magic_server.serve.jobs import Worker

BIND_ERROR = "Expected a torch.device with a specified index or an integer, but got:cuda"
PROMPT_S = 3.0  # a failed worker's job must fail this fast (the client's limit is 30 s)


def submit_in_thread(address: str, **params) -> dict:
    """Submit from a thread; the dict gets `error` (JobFailed), `result` and `seconds`."""
    out: dict = {}

    def run() -> None:
        with MagicClient(address, timeout_s=30, heartbeat_s=0.2) as c:
            request, _ = job_request(samples=1, **params)
            t0 = time.monotonic()
            try:
                out["result"] = c.submit(request, job_timeout_s=30)
            except JobFailed as exc:
                out["error"] = exc
            out["seconds"] = time.monotonic() - t0

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def slow_failing_bind(delay_s: float = 0.6):
    """A device binding that fails after a while (so that jobs are already waiting on it)."""

    def bind(self: Worker) -> None:
        time.sleep(delay_s)
        raise ValueError(BIND_ERROR)

    return bind


def test_a_worker_whose_binding_fails_fails_its_jobs_at_once_and_the_server_refuses_more(
        monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="magic_server")
    monkeypatch.setattr(Worker, "_bind_device", slow_failing_bind())
    with ThreadedServer(FakeEngine()) as srv:
        running = submit_in_thread(srv.address, seed=1, iterations=5)
        time.sleep(0.15)
        queued = submit_in_thread(srv.address, seed=2, iterations=5)
        for job in (running, queued):
            job["thread"].join(timeout=PROMPT_S + 2)
            assert not job["thread"].is_alive(), "the client is still waiting"
            error = job["error"]
            assert error.code == ErrorCode.INTERNAL
            assert error.message.startswith("internal error: worker 0 (cpu) failed binding "
                                            f"its device: ValueError: {BIND_ERROR}")
            assert job["seconds"] < PROMPT_S
        with MagicClient(srv.address, timeout_s=5) as c:
            request, _ = job_request(samples=1, iterations=2)
            t0 = time.monotonic()
            with pytest.raises(JobFailed) as refused:
                c.submit(request)
            assert time.monotonic() - t0 < 2
            workers = c.status()["workers"]
    assert refused.value.code == ErrorCode.INTERNAL
    assert "the server cannot run jobs (worker 0 (cpu) failed binding its device: ValueError" \
        in refused.value.message and "restart magic-server" in refused.value.message
    assert workers[0]["state"] == "failed" and "ValueError" in workers[0]["failure"]
    assert ("worker 0 (cpu) failed binding its device: ValueError: Expected a torch.device"
            in caplog.text)
    assert "it is not replaced (binding would fail again): no worker left, refusing new jobs" \
        in caplog.text


def test_a_worker_failing_outside_a_job_is_replaced_and_the_next_job_runs(monkeypatch, caplog):
    """Out of memory while idle, say: the job handed to it fails at once, naming the cause; a
    new worker thread on the same engine runs the next job."""
    caplog.set_level(logging.INFO, logger="magic_server")
    real_loop = Worker._loop
    failures = []

    def loop_failing_once(self: Worker) -> None:
        if failures:
            return real_loop(self)
        with self._ready:
            while not self._inbox:  # idle until a job is handed over, then the failure
                self._ready.wait()
        failures.append(self.index)
        raise RuntimeError("CUDA out of memory while idle\nsecond line")

    monkeypatch.setattr(Worker, "_loop", loop_failing_once)
    engine = FakeEngine()
    with ThreadedServer(engine) as srv:
        first = submit_in_thread(srv.address, seed=1, iterations=5)
        first["thread"].join(timeout=PROMPT_S + 2)
        assert first["error"].code == ErrorCode.INTERNAL and first["seconds"] < PROMPT_S
        assert first["error"].message == ("internal error: worker 0 (cpu) failed outside a "
                                          "job: RuntimeError: CUDA out of memory while idle")
        with MagicClient(srv.address, timeout_s=10) as c:
            request, rgba = job_request(samples=1, seed=2, iterations=3)
            result = c.submit(request, job_timeout_s=10)
            workers = c.status()["workers"]
    assert np.array_equal(as_array(result.images[0]), 255 - rgba[:, :, :3])
    assert failures == [0] and engine.calls == 1  # the first job never reached the engine
    assert workers[0]["state"] == "idle" and "failure" not in workers[0]
    assert "replaced by a new worker thread (restart 1 of 2)" in caplog.text


def test_a_worker_that_keeps_failing_is_taken_out_and_the_other_worker_serves(monkeypatch,
                                                                             caplog):
    caplog.set_level(logging.INFO, logger="magic_server")

    def loop_always_failing(self: Worker) -> None:
        if self.index == 0:
            raise MemoryError("no memory for the worker")
        return real_loop(self)

    real_loop = Worker._loop
    monkeypatch.setattr(Worker, "_loop", loop_always_failing)
    with ThreadedServer([FakeEngine(), FakeEngine()]) as srv:
        deadline = time.monotonic() + 5
        while 0 not in srv.server.failed and time.monotonic() < deadline:
            time.sleep(0.05)
        with MagicClient(srv.address, timeout_s=10) as c:
            request, _ = job_request(samples=1, iterations=2)
            c.submit(request, job_timeout_s=10)  # worker 1 runs it
            workers = c.status()["workers"]
    assert [w["state"] for w in workers] == ["failed", "idle"]
    assert workers[0]["failure"] == ("worker 0 (cpu) failed outside a job: MemoryError: no "
                                     "memory for the worker")
    assert caplog.text.count("replaced by a new worker thread") == server.MAX_WORKER_RESTARTS
    assert "it is not replaced (it failed 3 times): 1 worker(s) left" in caplog.text


def test_a_worker_thread_that_ends_without_a_report_fails_its_job(monkeypatch):
    """The housekeeping check: a worker thread gone silently still fails its job."""
    real_run = Worker.run
    silent = []

    def run_ending_silently(self: Worker) -> None:
        if silent:
            return real_run(self)
        silent.append(self.index)
        with self._ready:
            while not self._inbox:
                self._ready.wait()

    monkeypatch.setattr(Worker, "run", run_ending_silently)
    with ThreadedServer(FakeEngine()) as srv:
        job = submit_in_thread(srv.address, seed=1, iterations=5)
        job["thread"].join(timeout=PROMPT_S + 2)
    assert job["error"].code == ErrorCode.INTERNAL and job["seconds"] < PROMPT_S
    assert job["error"].message == ("internal error: worker 0 (cpu) failed outside a job: its "
                                    "thread ended unexpectedly")


def test_a_bare_cuda_device_is_bound_to_its_index(monkeypatch):
    """torch.cuda.set_device(torch.device("cuda")) raises ValueError (no index): the worker
    binds the current device's index instead."""
    bound = []

    def set_device(device) -> None:
        if isinstance(device, torch.device) and device.index is None:
            raise ValueError(BIND_ERROR)
        bound.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    for device, index in (("cuda", 0), ("cuda:1", 1)):
        engine = types.SimpleNamespace(device=torch.device(device))
        Worker(engine, lambda event: None)._bind_device()
        assert bound.pop() == index
    fake = types.SimpleNamespace(device=torch.device,
                                 cuda=types.SimpleNamespace(current_device=lambda: 3))
    assert jobs.cuda_index(fake, "cuda") == 3 and jobs.cuda_index(fake, "cuda:2") == 2
