"""Several engine workers in one server (`--device cpu,cpu`, `cuda:0,cuda:1`, `all`): jobs run
side by side, each on the first free worker; cancel, out-of-memory and the worker list in
welcome/status; device lists on the command line."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest
import torch
import zmq
from test_server_support import ROOT, FakeEngine, ThreadedServer, address, as_array, job_request

from magic_protocol import protocol as P
from magic_protocol.client import JobFailed, MagicClient
from magic_protocol.protocol import ErrorCode
from magic_server import devices
from magic_server.devices import DeviceError, parse_device_list, resolve_device_list
from magic_server.engine.api import Cancelled
from magic_server.serve import jobs

SUPPORT = [sys.executable, str(ROOT / "tests" / "test_server_support.py")]


class StampedEngine(FakeEngine):
    """A FakeEngine that notes, per job (keyed by seed), the time of every progress step it
    reports and how the call ended; each instance is one worker's engine."""

    def __init__(self, name: str, step_s: float = 0.02) -> None:
        super().__init__(step_s=step_s)
        self.name = name
        self.stamps: dict[int, list[float]] = {}
        self.ended: dict[int, str] = {}

    def synthesize(self, image, source_mask, guide_mask, options, on_progress=None,
                   cancel=None, *, init_image=None):
        stamps = self.stamps.setdefault(options.seed, [])

        def stamped(progress):
            stamps.append(time.monotonic())
            if on_progress is not None:
                on_progress(progress)

        try:
            result = super().synthesize(image, source_mask, guide_mask, options, stamped,
                                        cancel, init_image=init_image)
        except Cancelled:
            self.ended[options.seed] = "cancelled"
            raise
        self.ended[options.seed] = "done"
        return result


class Raw:
    def __init__(self, addr: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(addr)

    def submit(self, req: str, **params) -> str:
        request, _ = job_request(**params)
        self.sock.send_multipart(P.encode(P.SUBMIT, {"params": request.params()},
                                          request.frames(), req=req))
        return req

    def recv(self, timeout_s: float = 5.0) -> P.Message:
        assert self.sock.poll(int(timeout_s * 1000)), "no reply from the server"
        return P.decode(self.sock.recv_multipart(), expect=P.REPLY_TYPES)

    def close(self) -> None:
        self.sock.close(linger=0)


def collect(socks: list[Raw], until: int, timeout_s: float = 20.0) -> list[tuple[float, P.Message]]:
    """(arrival time, message) from all sockets until `until` terminal events arrived."""
    poller = zmq.Poller()
    for r in socks:
        poller.register(r.sock, zmq.POLLIN)
    got: list[tuple[float, P.Message]] = []
    end = time.monotonic() + timeout_s
    while sum(m.type in P.TERMINAL_EVENTS for _, m in got) < until:
        assert time.monotonic() < end, f"only {len(got)} messages: {[m.type for _, m in got]}"
        for sock, _ in poller.poll(200):
            got.append((time.monotonic(), P.decode(sock.recv_multipart(), expect=P.REPLY_TYPES)))
    return got


def span(stamps: list[float]) -> tuple[float, float]:
    assert stamps, "the engine reported no progress"
    return stamps[0], stamps[-1]


def test_two_cpu_workers_run_two_jobs_at_once_and_a_third_waits(caplog):
    a, b = StampedEngine("a"), StampedEngine("b")
    caplog.set_level(logging.INFO, logger="magic_server")
    with ThreadedServer([a, b]) as srv:
        clients = [Raw(srv.address) for _ in range(3)]
        ids = {}
        for k, c in enumerate(clients, start=1):  # seeds 1, 2, 3 = jobs 1, 2, 3
            c.submit(f"job{k}", seed=k, iterations=30, samples=1)
            accepted = c.recv()
            assert accepted.type == P.ACCEPTED
            ids[k] = accepted.header["job"]
            # 1 and 2 find a free worker (position 0); 3 has the two running ahead of it
            assert accepted.header["position"] == (2 if k == 3 else 0)
        time.sleep(0.15)
        with MagicClient(srv.address, timeout_s=5) as viewer:
            status = viewer.status()
        got = collect(clients, until=3)
        for c in clients:
            c.close()

    # status while 1 and 2 run: both workers busy, each with its job; 3 waits behind them
    workers = status["workers"]
    assert [w["worker"] for w in workers] == [0, 1] and {w["device"] for w in workers} == {"cpu"}
    assert [w["state"] for w in workers] == ["busy", "busy"]
    assert sorted(w["job"] for w in workers) == sorted([ids[1], ids[2]])
    assert sorted(j["job"] for j in status["running_jobs"]) == sorted([ids[1], ids[2]])
    assert status["running"]["job"] == status["running_jobs"][0]["job"]  # the old field stays
    assert [(j["job"], j["position"]) for j in status["queued"]] == [(ids[3], 2)]

    # each job ran on its own engine; the engines' own progress stamps overlap in time
    ran_on = {seed: e.name for e in (a, b) for seed in e.stamps}
    assert ran_on[1] != ran_on[2]
    start1, end1 = span((a if ran_on[1] == "a" else b).stamps[1])
    start2, end2 = span((a if ran_on[2] == "a" else b).stamps[2])
    overlap = min(end1, end2) - max(start1, start2)
    assert overlap > 0.5 * min(end1 - start1, end2 - start2), (start1, end1, start2, end2)
    start3, _ = span((a if ran_on[3] == "a" else b).stamps[3])
    assert start3 >= min(end1, end2)  # the third waited for a free worker

    # the clients saw it too: job 2's progress arrived while job 1 was still reporting
    arrivals = {k: [t for t, m in got if m.req == f"job{k}" and m.type == P.PROGRESS]
                for k in (1, 2, 3)}
    assert min(arrivals[2]) < max(arrivals[1]) and min(arrivals[1]) < max(arrivals[2])
    results = [m for _, m in got if m.type == P.RESULT]
    assert sorted(m.req for m in results) == ["job1", "job2", "job3"]

    log = caplog.text
    for k in (1, 2, 3):
        worker = 0 if ran_on[k] == "a" else 1
        assert f"job {ids[k][:8]} started on worker {worker} (cpu)" in log
    print(f"\ntwo CPU workers: job 1 {start1 - start1:.2f}-{end1 - start1:.2f} s, job 2 "
          f"{start2 - start1:.2f}-{end2 - start1:.2f} s, overlap {overlap:.2f} s; job 3 from "
          f"{start3 - start1:.2f} s")


def test_cancel_of_one_job_does_not_disturb_the_other_worker():
    a, b = StampedEngine("a", step_s=0.01), StampedEngine("b", step_s=0.01)
    with ThreadedServer([a, b]) as srv, MagicClient(srv.address, timeout_s=5) as other:
        long_job, short_job = Raw(srv.address), Raw(srv.address)
        long_job.submit("long", seed=1, iterations=100_000, samples=1)
        long_id = long_job.recv().header["job"]
        short_job.submit("short", seed=2, iterations=150, samples=1)
        short_job.recv()
        deadline = time.monotonic() + 5
        while not (a.stamps.get(1) and b.stamps.get(2)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.stamps.get(1) and b.stamps.get(2), "both jobs should be running"
        steps_before = len(b.stamps[2])
        assert other.cancel(long_id) is True
        msgs = [m for _, m in collect([long_job], until=1)]
        assert msgs[-1].type == P.CANCELLED and msgs[-1].header["job"] == long_id
        cancelled_at = time.monotonic()
        msgs = [m for _, m in collect([short_job], until=1)]
        long_job.close()
        short_job.close()
    assert a.ended == {1: "cancelled"} and b.ended == {2: "done"}  # the right worker got it
    assert msgs[-1].type == P.RESULT and msgs[-1].req == "short"
    assert len(b.stamps[2]) == 150 > steps_before
    assert b.stamps[2][-1] > cancelled_at  # it kept going after the other one stopped
    _, rgba = job_request(samples=1)
    result_pixels = np.frombuffer(msgs[-1].frames[0][1], np.uint8).reshape(24, 32, 3)
    assert np.array_equal(result_pixels, 255 - rgba[:, :, :3])


def test_welcome_lists_the_workers_and_a_free_worker_takes_the_next_job():
    a, b = StampedEngine("a"), StampedEngine("b")
    with ThreadedServer([a, b]) as srv, MagicClient(srv.address, timeout_s=5) as c:
        info = c.handshake()
        assert info.device == "cpu"
        workers = info.raw["workers"]
        assert [(w["worker"], w["name"], w["device"], w["state"], w["job"]) for w in workers] \
            == [(0, "worker-0", "cpu", "idle", None), (1, "worker-1", "cpu", "idle", None)]
        assert all(w["device_name"] for w in workers)
        # one after the other: each job finds worker 0 free again
        for seed in (5, 6):
            request, _ = job_request(seed=seed, iterations=3, samples=1)
            assert c.submit(request).seeds == [seed]
        assert set(a.stamps) == {5, 6} and b.stamps == {}
        assert [w["state"] for w in c.status()["workers"]] == ["idle", "idle"]


def test_per_client_limit_counts_jobs_running_on_every_worker():
    limits = P.Limits(max_jobs_per_client=2)
    with ThreadedServer([StampedEngine("a"), StampedEngine("b")], limits=limits) as srv:
        r = Raw(srv.address)
        for k in range(2):
            r.submit(f"j{k}", seed=k, iterations=100_000, samples=1)
            assert r.recv().type == P.ACCEPTED
        time.sleep(0.2)  # both running now, none queued
        assert len(srv.server.running_jobs()) == 2
        r.submit("j2", iterations=5)
        reply = r.recv()
        while reply.type == P.PROGRESS:
            reply = r.recv()
        assert reply.type == P.ERROR and reply.header["code"] == ErrorCode.QUEUE_FULL
        r.close()


def test_shutdown_cancels_every_running_job_and_tells_the_waiting_one():
    srv = ThreadedServer([StampedEngine("a"), StampedEngine("b")])
    with srv:
        r = Raw(srv.address)
        for k in range(3):
            r.submit(f"j{k}", seed=k, iterations=100_000, samples=1)
            assert r.recv().type == P.ACCEPTED
        deadline = time.monotonic() + 5
        while len(srv.server.running_jobs()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(srv.server.running_jobs()) == 2
    last: dict[str, P.Message] = {}
    while r.sock.poll(500):
        msg = P.decode(r.sock.recv_multipart(), expect=P.REPLY_TYPES)
        last[msg.req] = msg
    r.close()
    assert {k: m.type for k, m in last.items()} == {
        "j0": P.CANCELLED, "j1": P.CANCELLED, "j2": P.ERROR}
    assert last["j2"].header["code"] == ErrorCode.SHUTTING_DOWN
    assert all(not w.is_alive() for w in srv.server.workers)


def test_load_engines_gives_each_device_its_own_classifier_copy():
    from magic_server.serve.command import load_engines

    first, second = load_engines([torch.device("cpu"), torch.device("cpu")], "untrained")
    assert first.classifier is not second.classifier
    a, b = dict(first.classifier.named_parameters()), dict(second.classifier.named_parameters())
    assert a.keys() == b.keys()
    assert all(a[k] is not b[k] and torch.equal(a[k], b[k]) for k in a)
    assert first.weights_label == second.weights_label
    assert str(first.device) == str(second.device) == "cpu"


def test_an_engine_shared_by_two_workers_is_refused():
    from magic_server.serve.server import Server

    engine = FakeEngine()
    with pytest.raises(ValueError, match="its own engine"):
        Server([engine, engine], address())


def test_two_cpu_workers_split_the_torch_threads_while_serving():
    from magic_server.serve.server import threads_per_cpu_worker

    class ThreadCountingEngine(FakeEngine):
        def synthesize(self, *args, **kwargs):
            self.threads_seen = torch.get_num_threads()  # in the worker's thread
            return super().synthesize(*args, **kwargs)

    before = torch.get_num_threads()
    engines = [ThreadCountingEngine(step_s=0.05), ThreadCountingEngine(step_s=0.05)]
    with ThreadedServer(engines) as srv:
        r = Raw(srv.address)
        for k in range(2):
            r.submit(f"j{k}", seed=k, iterations=4, samples=1)
        collect([r], until=2)
        r.close()
    assert [e.threads_seen for e in engines] == [max(1, before // 2)] * 2
    assert torch.get_num_threads() == before  # this thread's count is left alone
    assert threads_per_cpu_worker(16, 2) == 8 and threads_per_cpu_worker(3, 4) == 1


# ------------------------------------------------------------------ out of memory

class OutOfMemoryEngine(StampedEngine):
    """Raises torch.cuda.OutOfMemoryError (what a CUDA engine raises) for seed 13, after
    allocating a tensor that only the failed call's frame holds."""

    def __init__(self, name: str) -> None:
        super().__init__(name, step_s=0.0)
        self.held: weakref.ref | None = None

    def synthesize(self, image, source_mask, guide_mask, options, on_progress=None,
                   cancel=None, *, init_image=None):
        if options.seed == 13:
            activations = torch.ones(256, 1024)  # what the GPU would have been full of
            self.held = weakref.ref(activations)
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")
        return super().synthesize(image, source_mask, guide_mask, options, on_progress,
                                  cancel, init_image=init_image)


def test_cuda_out_of_memory_error_is_reported_memory_released_next_job_runs(monkeypatch):
    freed: list[tuple[str, bool]] = []
    engine = OutOfMemoryEngine("a")
    real_free = jobs.free_device_memory

    def spy(device=None):
        # The failed call's tensors must be unreachable by the time memory is freed.
        real_free(device)
        freed.append((device, engine.held is not None and engine.held() is None))

    monkeypatch.setattr(jobs, "free_device_memory", spy)
    assert jobs.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with ThreadedServer([engine, StampedEngine("b")]) as srv, \
            MagicClient(srv.address, timeout_s=5) as c:
        request, _ = job_request(seed=13, samples=1)
        with pytest.raises(JobFailed) as info:
            c.submit(request)
        assert info.value.code == ErrorCode.OUT_OF_MEMORY
        assert "ran out of memory" in str(info.value) and "fewer samples" in str(info.value)
        assert freed == [("cpu", True)]
        request, rgba = job_request(seed=14, iterations=2, samples=1)
        result = c.submit(request)  # the same worker (0, the first free one) carries on
        assert np.array_equal(as_array(result.images[0]), 255 - rgba[:, :, :3])
        assert 14 in engine.stamps
        assert [w["state"] for w in c.status()["workers"]] == ["idle", "idle"]


def test_free_device_memory_empties_the_cache_of_the_workers_own_gpu(monkeypatch):
    calls: list[object] = []

    class DeviceScope:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            calls.append(("enter", str(self.device)))

        def __exit__(self, *exc):
            calls.append(("exit", str(self.device)))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", DeviceScope)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    jobs.free_device_memory("cuda:1")
    assert calls == [("enter", "cuda:1"), "empty_cache", ("exit", "cuda:1")]
    calls.clear()
    jobs.free_device_memory("cpu")  # nothing to give back to a driver
    assert calls == []


# ------------------------------------------------------------------ device lists

def test_device_list_spelling():
    assert parse_device_list("cpu,cpu") == ["cpu", "cpu"]
    assert parse_device_list(" CUDA:0 , cuda:1 ") == ["cuda:0", "cuda:1"]
    assert parse_device_list("all") == ["all"] and parse_device_list("auto") == ["auto"]
    for text, words in [("", "empty"), ("  ", "empty"), ("cpu,,cpu", "empty entry"),
                        ("cpu,", "empty entry"), ("foo", "unknown device 'foo'"),
                        ("cpu,gpu0", "unknown device 'gpu0'"), ("cuda:x", "unknown device"),
                        ("all,cpu", "give it alone")]:
        with pytest.raises(DeviceError, match=words):
            parse_device_list(text)


def test_all_means_every_cuda_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device_list(["all"]) == [torch.device("cuda", i) for i in range(3)]
    assert resolve_device_list(["cuda", "cuda:2", "cpu"]) == [
        torch.device("cuda", 0), torch.device("cuda", 2), torch.device("cpu")]
    with pytest.raises(DeviceError, match="'cuda:3' does not exist"):
        resolve_device_list(["cuda:0", "cuda:3"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert resolve_device_list(["all"]) == [torch.device("cpu")]
    with pytest.raises(DeviceError, match="sees no CUDA GPU"):
        resolve_device_list(["cpu", "cuda:1"])


@pytest.mark.parametrize("device, words", [
    ("cuda:7", "'cuda:7'"), ("foo", "unknown device 'foo'"), ("", "--device is empty"),
    ("cpu,,cpu", "empty entry"), ("all,cuda:0", "give it alone"),
])
def test_bad_device_lists_are_one_clear_line(device, words):
    out = subprocess.run([*SUPPORT, "--bind", address(), "--device", device],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 1 and "ready" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("magic-server: ") and words in lines[0]


def reap(proc: subprocess.Popen) -> None:
    """Kill a server process the test did not stop itself and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


def test_cpu_cpu_server_process_lists_two_workers():
    addr = address()
    proc = subprocess.Popen([*SUPPORT, "--bind", addr, "--device", "cpu,cpu", "--step-s",
                             "0.02"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "ready" in line and "2 workers: cpu, cpu" in line, line
        with MagicClient(addr, timeout_s=5) as c:
            assert [w["device"] for w in c.handshake().raw["workers"]] == ["cpu", "cpu"]
            seen: dict[int, dict[str, float]] = {1: {}, 2: {}}

            def run(seed: int) -> None:
                def on_event(event) -> None:
                    seen[seed].setdefault(event.kind, time.monotonic())

                with MagicClient(addr, timeout_s=5, heartbeat_s=0.2) as mine:
                    request, _ = job_request(seed=seed, iterations=50, samples=1)
                    assert mine.submit(request, on_event=on_event).seeds == [seed]
                    seen[seed]["end"] = time.monotonic()

            threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=20)
        assert all("end" in seen[k] for k in (1, 2)), seen
        # each job reported progress before the other one finished: they ran side by side
        assert seen[1]["progress"] < seen[2]["end"] and seen[2]["progress"] < seen[1]["end"]
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        log = proc.stderr.read()
        assert "started on worker 0 (cpu)" in log and "started on worker 1 (cpu)" in log
    finally:
        reap(proc)


def test_real_magic_server_with_two_cpu_workers():
    addr = address()
    proc = subprocess.Popen([sys.executable, "-m", "magic_server.server", "--bind", addr,
                             "--device", "cpu,cpu", "--weights", "untrained", "--no-warm-up"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "ready" in line and "2 workers: cpu, cpu" in line, proc.stderr.read()
        with MagicClient(addr, timeout_s=10) as c:
            workers = c.handshake().raw["workers"]
        assert [(w["device"], w["device_name"], w["state"]) for w in workers] == [
            ("cpu", "CPU", "idle"), ("cpu", "CPU", "idle")]
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        log = proc.stderr.read()
        split = re.search(r"2 CPU workers: (\d+) torch thread\(s\) each \(of (\d+)\)", log)
        assert split, log
        assert int(split.group(1)) == max(1, int(split.group(2)) // 2)
        assert "Traceback" not in log
    finally:
        reap(proc)
