"""magic-server: a long-lived ZeroMQ job server that keeps the classifier loaded.

One event loop owns the ROUTER socket (zmq.Poller); one worker thread per device runs its own
engine (jobs.py), and the loop gives each queued job to the first free worker. The workers'
events come back through a queue plus an inproc PUSH/PULL pair that wakes the loop, so only
the loop thread ever touches the ROUTER. Protocol: magic_protocol/protocol.py and
docs/protocol.md.

Why worker threads and not worker processes: the engine spends its time inside torch
kernels, which release the GIL (CUDA launches and CPU convolutions alike), so threads run
side by side; one process keeps cancellation a threading.Event, passes images between the
loop and the engines without copies or serialisation (no pickles, and no second wire format
to design), and lets one process drive every GPU. The price is that torch's intra-op thread
count is process-wide (torch.set_num_threads sets the default that every thread starts with,
and each thread that enters a parallel region gets its own team of that size): two CPU
workers left at the default would run two full-size teams on the same cores. With several CPU
workers the server therefore gives each the cores divided by the CPU workers, set in the
worker's own thread and as the default, while it serves (see _split_cpu_threads).
"""

from __future__ import annotations

import errno
import logging
import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from magic_protocol import protocol as P
from magic_protocol.protocol import DEFAULT_ADDRESS, DEFAULT_LIMITS, ErrorCode, Limits
from magic_server.engine.api import EditEngine, EngineDescription
from magic_server.engine.presets import PRESETS, preset_iterations
from magic_server.serve.curve import (
    CurveConfig,
    CurveSetupError,
    is_local_endpoint,
)
from magic_server.serve.estimates import Estimates
from magic_server.serve.jobs import (
    FairQueue,
    JobState,
    ServerJob,
    Worker,
    WorkerEvent,
    WorkerFailure,
    WorkerState,
    engine_device,
)

log = logging.getLogger("magic_server")

SERVER_VERSION = "0.1.0"
DEFAULT_HEARTBEAT_TIMEOUT_S = 10.0
HOUSEKEEPING_INTERVAL_S = 0.2
MAX_MESSAGES_PER_TURN = 64  # keep worker events flowing even under a flood of requests
CANCELLED_KEY_TTL_S = 120.0  # how long a cancel key whose job has not arrived is kept
MAX_CANCELLED_KEYS = 4096
# A worker that fails outside a job is replaced by a new thread on the same engine this many
# times; one that fails binding its device is not (it would fail again).
MAX_WORKER_RESTARTS = 2


class BindError(Exception):
    """The address cannot be bound (user-facing, one line)."""


class Server:
    """The job server. `engine` is an EditEngine (engine/api.py); a list of engines gives one
    worker each (worker i runs engines[i], on its own device)."""

    def __init__(self, engine: EditEngine | Sequence[EditEngine],
                 address: str = DEFAULT_ADDRESS, *,
                 limits: Limits = DEFAULT_LIMITS,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 curve: CurveConfig | None = None, default_resolution: int = 224,
                 context: zmq.Context | None = None) -> None:
        if curve is None and not is_local_endpoint(address):
            raise CurveSetupError(f"{address} is reachable from other machines: binding it needs "
                                  "CurveZMQ keys (run `magic-server --keygen`, then pass --curve)")
        engines = list(engine) if isinstance(engine, (list, tuple)) else [engine]
        if not engines:
            raise ValueError("a server needs at least one engine")
        if len({id(e) for e in engines}) != len(engines):
            raise ValueError("each worker needs its own engine (an engine is not thread-safe)")
        self.engines = engines
        self.engine = engines[0]  # describes the server in the handshake (presets, weights)
        self.address = address
        self.limits = limits
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.curve = curve
        self.ctx = context or zmq.Context()
        self._own_ctx = context is None
        self.queue = FairQueue()
        self.busy: list[ServerJob | None] = [None] * len(engines)  # the job each worker runs
        self.jobs: dict[str, ServerJob] = {}  # queued and running, by id
        # cancel keys cancelled before their job arrived (key -> when): such a job is
        # cancelled as soon as it does (its client died while sending it)
        self.cancelled_keys: dict[str, float] = {}
        self.last_seen: dict[bytes, float] = {}
        self.client_names: dict[bytes, int] = {}
        self._events: queue.Queue[WorkerEvent | WorkerFailure] = queue.Queue()
        self.failed: dict[int, str] = {}  # workers that failed for good: index -> why
        self.restarts = [0] * len(engines)
        self._stop = threading.Event()
        self._wake_addr = f"inproc://magic-wake-{id(self):x}"
        self._auth = None
        self._threads_before: int | None = None
        self.workers_info: list[dict[str, Any]] = []
        self.capabilities = self._capabilities()
        # seconds per iteration, from this server's finished jobs (main() adds a start-up
        # probe and a file that keeps them): "estimates" in welcome and status_report
        self.estimates = Estimates(self.capabilities.get("preset_iterations") or {}, "")
        self.router = self._bind()
        # PULL, not PAIR: every worker thread connects its own PUSH end.
        self._wake_rx = self.ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx_local = threading.local()
        self.default_resolution = default_resolution
        self.workers = [self._new_worker(i) for i in range(len(engines))]

    def _new_worker(self, index: int) -> Worker:
        return Worker(self.engines[index], self._emit, default_resolution=self.default_resolution,
                      name=f"magic-worker-{index}", on_exit=self._close_wake_tx, index=index)

    @property
    def running(self) -> ServerJob | None:
        """The running job of the lowest-numbered busy worker, or None when all are idle."""
        return next((j for j in self.busy if j is not None), None)

    def running_jobs(self) -> list[ServerJob]:
        return [j for j in self.busy if j is not None]

    # -- setup ----------------------------------------------------------------

    def _bind(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        sock.setsockopt(zmq.RCVHWM, 100)
        try:
            if self.curve is not None:
                self._auth = self.curve.apply(self.ctx, sock)
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self._stop_auth()
            if exc.errno == errno.EADDRINUSE:
                raise BindError(f"{self.address} is already in use (another magic-server "
                                "running?); stop it or pick another port with "
                                "--bind tcp://127.0.0.1:PORT") from None
            raise BindError(f"cannot bind {self.address}: {exc.strerror}") from None
        except CurveSetupError:
            sock.close(linger=0)
            self._stop_auth()
            raise
        return sock

    def _capabilities(self) -> dict[str, Any]:
        described = [self._description(e, i) for i, e in enumerate(self.engines)]
        self.workers_info = [self._worker_info(i, d) for i, d in enumerate(described)]
        d = described[0]  # worker 0 describes the server (presets, weights)
        return {
            "protocol": P.PROTOCOL_VERSION,
            "server_version": SERVER_VERSION,
            "device": d.device,
            "gpu_name": None if d.device.startswith("cpu") else d.device_name,
            "gpu_memory_bytes": self.workers_info[0]["gpu_memory_bytes"],
            "weights_label": d.weights_label,
            "weights_loaded": d.weights_loaded,
            "bf16": d.bf16,
            "capture": d.capture,
            "deterministic": d.deterministic,
            "presets": list(d.preset_iterations or PRESETS),
            "modes": list(P.MODES),
            "limits": self.limits.to_dict(),
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
            "curve": self.curve is not None,
            # each preset's iterations, when the engine knows them: time estimates
            **({"preset_iterations": dict(d.preset_iterations)} if d.preset_iterations else {}),
        }

    @staticmethod
    def _description(engine: EditEngine, index: int) -> EngineDescription:
        try:
            return engine.describe()
        except Exception as exc:  # noqa: BLE001 - informative only: the worker still runs
            log.warning("worker %d: engine.describe() failed: %s", index, exc)
            return loading_description(engine_device(engine))

    @staticmethod
    def _worker_info(index: int, d: EngineDescription) -> dict[str, Any]:
        """The unchanging part of a worker's entry in `workers` (welcome, status_report)."""
        return {"worker": index, "name": f"worker-{index}", "device": d.device,
                "device_name": d.device_name,
                "gpu_memory_bytes": None if d.gpu_memory_mb is None else d.gpu_memory_mb * 2**20}

    def workers_status(self) -> list[dict[str, Any]]:
        """Each worker: its device, its name, busy or idle, and the job it runs (or None)."""
        out = []
        for i, (info, job) in enumerate(zip(self.workers_info, self.busy)):
            state = WorkerState.BUSY if job is not None else WorkerState.IDLE
            entry = {**info, "state": state.value, "job": job.id if job is not None else None}
            if i in self.failed:
                entry.update(state=WorkerState.FAILED.value, failure=self.failed[i])
            out.append(entry)
        return out

    # -- running ----------------------------------------------------------------

    def endpoint(self) -> str:
        return self.router.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        """Ask the loop to finish (safe from signal handlers and other threads)."""
        self._stop.set()

    def serve_forever(self) -> None:
        self._split_cpu_threads()
        for worker in self.workers:
            worker.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        next_housekeeping = 0.0
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(int(HOUSEKEEPING_INTERVAL_S * 1000)))
                if self._wake_rx in ready:
                    while self._wake_rx.poll(0):
                        self._wake_rx.recv()
                self._drain_worker_events()
                if self.router in ready:
                    for _ in range(MAX_MESSAGES_PER_TURN):
                        try:
                            parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(parts)
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._check_workers()
                    self._reap_silent_clients(now)
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
                self._dispatch()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for job in list(self.queue):
            self._send(job.owner, P.encode_error(ErrorCode.SHUTTING_DOWN,
                                                 "the server is shutting down", req=job.req,
                                                 job=job.id))
            self._forget(job)
        for job in self.running_jobs():
            job.cancel_reason = "the server is shutting down"
            job.cancel.set()
        started = [w for w in self.workers if w.ident is not None]
        for worker in started:
            worker.stop()
        deadline = time.monotonic() + 5
        for worker in started:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self._drain_worker_events()
        self.router.close(linger=0)
        self._wake_rx.close(linger=0)
        self._stop_auth()
        self._restore_cpu_threads()
        stuck = [w.index for w in self.workers if w.is_alive()]
        if stuck:  # an engine call that ignores cancel: do not wait for it
            log.warning("the engine of worker(s) %s did not stop within 5 s; leaving it behind",
                        ", ".join(map(str, stuck)))
        elif self._own_ctx:
            self.ctx.term()

    def _split_cpu_threads(self) -> None:
        """Several CPU workers share the cores: torch's intra-op thread count (process-global)
        becomes cores // CPU workers while serving; a single CPU worker keeps torch's default."""
        torch = sys.modules.get("torch")
        cpu_workers = sum(w.device == "cpu" for w in self.workers)
        if torch is None or cpu_workers < 2:
            return
        total = torch.get_num_threads()
        share = threads_per_cpu_worker(total, cpu_workers)
        self._threads_before = total
        torch.set_num_threads(share)
        for worker in self.workers:
            if worker.device == "cpu":
                worker.threads = share
        log.info("%d CPU workers: %d torch thread(s) each (of %d)", cpu_workers, share, total)

    def _restore_cpu_threads(self) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    # -- worker events ------------------------------------------------------------

    def _emit(self, event: WorkerEvent) -> None:
        """Called from the worker thread."""
        self._events.put(event)
        tx = getattr(self._wake_tx_local, "sock", None)
        if tx is None:
            tx = self.ctx.socket(zmq.PUSH)
            tx.setsockopt(zmq.LINGER, 0)
            tx.connect(self._wake_addr)
            self._wake_tx_local.sock = tx
        try:
            tx.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the loop also drains the queue on its housekeeping tick

    def _close_wake_tx(self) -> None:
        """Called by the worker thread as it ends: its end of the wake-up pair."""
        tx = getattr(self._wake_tx_local, "sock", None)
        if tx is not None:
            tx.close(linger=0)
            self._wake_tx_local.sock = None

    def _drain_worker_events(self) -> None:
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(ev, WorkerFailure):
                worker = self.workers[ev.worker]
                if worker.failure is ev:
                    self._on_worker_failure(worker, ev)
                continue
            job = ev.job
            fields = {"job": job.id, **ev.fields}
            message = P.encode(ev.kind, fields, ev.frames, req=job.req)
            if ev.kind not in P.TERMINAL_EVENTS:
                self._send(job.owner, message)
            if ev.kind == P.PROGRESS:
                self.estimates.progress(job.id, ev.fields.get("stage"),
                                        int(ev.fields.get("iteration") or 0))
            elif ev.kind == P.RESULT:
                self.estimates.observe(job.params.preset, int(ev.fields.get("iterations") or 0),
                                       job.params.samples, ev.fields.get("elapsed_s"), job.id)
            if ev.kind in P.TERMINAL_EVENTS:
                self.estimates.forget(job.id)
                elapsed = time.monotonic() - job.submitted_at
                detail = ev.fields.get("code") or ev.fields.get("message") or ""
                log.info("job %s %s after %.1f s on worker %s %s", job.id[:8], ev.kind,
                         elapsed, job.worker, detail)
                job.state = JobState.DONE
                if job.worker is not None and self.busy[job.worker] is job:
                    self.busy[job.worker] = None
                self._forget(job)
                # the server's own state is final before the client hears (a test, or a
                # status asked from another thread, sees no job that has ended)
                self._send(job.owner, message)

    # -- failed workers ---------------------------------------------------------------

    def _check_workers(self) -> None:
        """A worker thread that ended without being asked to (and without a report that
        arrived) counts as failed too: its job must not wait for ever."""
        if self._stop.is_set():
            return
        for i, worker in enumerate(self.workers):
            if i in self.failed or worker.ident is None or worker.is_alive():
                continue
            failure = worker.failure or WorkerFailure(
                i, worker.device, "its thread ended unexpectedly", binding=False)
            worker.failure = failure
            self._on_worker_failure(worker, failure)

    def _on_worker_failure(self, worker: Worker, failure: WorkerFailure) -> None:
        """Fail the job the worker ran (at once, `internal`, naming the cause), then replace
        the worker, or take it out of service; with no worker left, fail the queued jobs and
        refuse new ones with the reason."""
        i = failure.worker
        if self.workers[i] is not worker or i in self.failed:
            return  # already handled (its report and the housekeeping check both saw it)
        where = "binding its device" if failure.binding else "outside a job"
        reason = f"worker {i} ({failure.device}) failed {where}: {failure.cause}"
        job = self.busy[i]
        if job is not None:
            self.busy[i] = None
            self._fail(job, reason)
        if failure.binding or self.restarts[i] >= MAX_WORKER_RESTARTS or self._stop.is_set():
            self.failed[i] = reason
            why = ("binding would fail again" if failure.binding else
                   f"it failed {self.restarts[i] + 1} times")
            left = len(self.workers) - len(self.failed)
            if left:
                log.error("%s; it is not replaced (%s): %d worker(s) left", reason, why, left)
                return
            log.error("%s; it is not replaced (%s): no worker left, refusing new jobs",
                      reason, why)
            for queued in list(self.queue):
                self.queue.remove(queued)
                self._fail(queued, reason)
            return
        self.restarts[i] += 1
        replacement = self._new_worker(i)
        replacement.threads = worker.threads
        self.workers[i] = replacement
        replacement.start()
        log.warning("%s; replaced by a new worker thread (restart %d of %d)", reason,
                    self.restarts[i], MAX_WORKER_RESTARTS)

    def _fail(self, job: ServerJob, reason: str) -> None:
        job.cancel_reason = reason
        job.cancel.set()
        log.info("job %s error after %.1f s: internal error: %s", job.id[:8],
                 time.monotonic() - job.submitted_at, reason)
        job.state = JobState.DONE
        self._forget(job)
        self._send(job.owner, P.encode_error(ErrorCode.INTERNAL, f"internal error: {reason}",
                                             req=job.req, job=job.id))

    def unavailable(self) -> str | None:
        """Why no job can run (every worker failed), or None."""
        if self.failed and len(self.failed) == len(self.workers):
            return "; ".join(self.failed[i] for i in sorted(self.failed))
        return None

    # -- requests -------------------------------------------------------------------

    def _handle(self, parts: list[zmq.Frame]) -> None:
        if len(parts) < 2:
            return  # a routing id without payload cannot be answered meaningfully
        who = parts[0].bytes
        self.last_seen[who] = time.monotonic()
        req: str | None = None
        try:
            payload = [parts[1].bytes] + [memoryview(f.buffer) for f in parts[2:]]
            msg = P.decode(payload, expect=P.REQUEST_TYPES, limits=self.limits)
            req = msg.req
            getattr(self, f"_on_{msg.type}")(who, msg)
        except P.ProtocolError as exc:
            self._send(who, P.encode_error(exc.code, exc.message, req=exc.req or req))
        except Exception as exc:
            log.exception("request from client %s failed", self._client_name(who))
            self._send(who, P.encode_error(ErrorCode.INTERNAL, f"server error: {exc}", req=req))

    def _on_hello(self, who: bytes, msg: P.Message) -> None:
        log.info("client %s: hello (%s)", self._client_name(who),
                 str(msg.header.get("client", ""))[:80])
        server = {**self.capabilities, "workers": self.workers_status(),
                  "estimates": self.estimates.report()}
        self._send(who, P.encode(P.WELCOME, {"server": server}, req=msg.req))

    def _on_ping(self, who: bytes, msg: P.Message) -> None:
        fields: dict[str, Any] = {"time": time.time()}
        if "job" in msg.header:  # a heartbeat for a job: tell whether it is still known
            job = self.jobs.get(P.job_id_field(msg))
            fields.update(job=msg.header["job"], job_state=job.state.value if job else "unknown")
        self._send(who, P.encode(P.PONG, fields, req=msg.req))

    def _on_status(self, who: bytes, msg: P.Message) -> None:
        running = [j.summary(who, 0) for j in self.running_jobs()]
        queued = [j.summary(who, self._position(i)) for i, j in enumerate(self.queue.order())]
        self._send(who, P.encode(P.STATUS_REPORT, {
            "running": running[0] if running else None, "running_jobs": running,
            "queued": queued, "workers": self.workers_status(),
            "clients": len(self.last_seen), "estimates": self.estimates.report()},
            req=msg.req))

    def _on_cancel(self, who: bytes, msg: P.Message) -> None:
        key = P.cancel_key_field(msg) if "job" not in msg.header else None
        if key is not None:
            self._cancel_by_key(who, key, msg.req)
            return
        job_id = P.job_id_field(msg)
        job = self.jobs.get(job_id)
        if job is None:
            raise P.ProtocolError(ErrorCode.UNKNOWN_JOB, f"no queued or running job {job_id}",
                                  msg.req)
        self._cancel(job, f"cancelled by client {self._client_name(who)}")
        self._send(who, P.encode(P.CANCEL_ACK, {"job": job_id, "found": True}, req=msg.req))

    def _cancel_by_key(self, who: bytes, key: str, req: str | None) -> None:
        """Cancel the jobs submitted with this cancel key; with none (yet), remember the key
        for CANCELLED_KEY_TTL_S so that its job is cancelled when it arrives."""
        found = [j for j in self.jobs.values() if j.cancel_key == key]
        for job in found:
            self._cancel(job, f"cancelled by client {self._client_name(who)} (cancel key)")
        if not found:
            self._forget_old_keys(time.monotonic())
            if len(self.cancelled_keys) >= MAX_CANCELLED_KEYS:
                self.cancelled_keys.pop(next(iter(self.cancelled_keys)))
            self.cancelled_keys[key] = time.monotonic()
            log.info("client %s cancelled a job that has not arrived (yet)",
                     self._client_name(who))
        self._send(who, P.encode(P.CANCEL_ACK, {"cancel_key": key, "found": bool(found)},
                                 req=req))

    def _forget_old_keys(self, now: float) -> None:
        for key, when in list(self.cancelled_keys.items()):
            if now - when > CANCELLED_KEY_TTL_S:
                del self.cancelled_keys[key]

    def _on_submit(self, who: bytes, msg: P.Message) -> None:
        params = P.validate_submit(msg, self.limits, self.capabilities["presets"])
        down = self.unavailable()
        if down is not None:
            raise P.ProtocolError(ErrorCode.INTERNAL, f"internal error: the server cannot run "
                                  f"jobs ({down}); restart magic-server", msg.req)
        cancel_key = P.cancel_key_field(msg)
        if len(self.queue) >= self.limits.max_queue:
            raise P.ProtocolError(ErrorCode.QUEUE_FULL, f"the queue is full ({len(self.queue)} "
                                  "jobs); try again later", msg.req)
        mine = self.queue.count_for(who) + sum(j.owner == who for j in self.running_jobs())
        if mine >= self.limits.max_jobs_per_client:
            raise P.ProtocolError(ErrorCode.QUEUE_FULL, f"you already have {mine} jobs waiting; "
                                  "wait for them or cancel some", msg.req)
        image = msg.frames[0][0]
        job = ServerJob(owner=who, req=msg.req, params=params,
                        frames={spec.name: (spec, data) for spec, data in msg.frames},
                        width=image.width, height=image.height, cancel_key=cancel_key)
        self.queue.push(job)
        self.jobs[job.id] = job
        position = self._position(self.queue.order().index(job))
        extras = "".join(text for on, text in (
            (msg.frame(P.FRAME_INIT) is not None, ", from an init composite"),
            (not params.composite, ", whole image"), (not params.refine, ", no refine")) if on)
        log.info("job %s from client %s: %s %dx%d, %d sample(s), preset %s%s, queue position %d",
                 job.id[:8], self._client_name(who), params.mode, job.width, job.height,
                 params.samples, params.preset, extras, position)
        self._send(who, P.encode(P.ACCEPTED, {"job": job.id, "position": position}, req=msg.req))
        if cancel_key is not None and self.cancelled_keys.pop(cancel_key, None) is not None:
            self._cancel(job, "cancelled by its client before it arrived (cancel key)")

    # -- queue ------------------------------------------------------------------------

    def _position(self, index: int) -> int:
        """`position` of the queued job at `index` in pop order: 0 when a free worker will
        start it at once, else how many jobs start before it (the running ones included)."""
        busy = len(self.running_jobs())
        return 0 if index < len(self.workers) - len(self.failed) - busy else index + busy

    def _dispatch(self) -> None:
        """Give queued jobs (round-robin over clients) to free workers, lowest index first."""
        while not self._stop.is_set():
            free = next((i for i, job in enumerate(self.busy)
                         if job is None and i not in self.failed), None)
            if free is None:
                return
            job = self.queue.pop()
            if job is None:
                return
            job.state = JobState.RUNNING
            job.worker = free
            self.busy[free] = job
            worker = self.workers[free]
            log.info("job %s started on worker %d (%s)", job.id[:8], free, worker.device)
            worker.start_job(job)

    def _cancel(self, job: ServerJob, reason: str) -> None:
        job.cancel_reason = reason
        job.cancel.set()
        if self.queue.remove(job):
            log.info("job %s cancelled while queued: %s", job.id[:8], reason)
            self._forget(job)  # forgotten before the client hears it is cancelled
            self._send(job.owner, P.encode(P.CANCELLED, {"job": job.id, "message": reason},
                                           req=job.req))
        # a running job: the worker stops at the engine's next iteration and reports CANCELLED

    def _forget(self, job: ServerJob) -> None:
        job.release()
        self.jobs.pop(job.id, None)

    def _reap_silent_clients(self, now: float) -> None:
        self._forget_old_keys(now)
        limit = self.heartbeat_timeout_s
        for job in list(self.jobs.values()):
            silent = now - self.last_seen.get(job.owner, now)
            if silent > limit and not job.cancel.is_set():
                log.info("client %s gone (silent %.1f s): cancelling job %s",
                         self._client_name(job.owner), silent, job.id[:8])
                self._cancel(job, f"{ErrorCode.CLIENT_GONE}: no heartbeat for {silent:.0f} s")
        owners = {j.owner for j in self.jobs.values()}
        for who, seen in list(self.last_seen.items()):
            if who not in owners and now - seen > max(60.0, 6 * limit):
                del self.last_seen[who]
                self.client_names.pop(who, None)

    # -- helpers ------------------------------------------------------------------------

    def _send(self, who: bytes, parts: list[Any]) -> None:
        try:
            self.router.send_multipart([who, *parts], zmq.NOBLOCK, copy=len(parts) == 1)
        except zmq.ZMQError as exc:  # peer gone or its queue full: drop, like ROUTER does
            log.debug("dropped a message to client %s: %s", self._client_name(who), exc)

    def _client_name(self, who: bytes) -> str:
        if who not in self.client_names:
            self.client_names[who] = len(self.client_names) + 1
        return str(self.client_names[who])


def threads_per_cpu_worker(total: int, cpu_workers: int) -> int:
    """torch intra-op threads for each of `cpu_workers` CPU workers sharing `total`."""
    return max(1, total // max(1, cpu_workers))


def loading_description(device: str) -> EngineDescription:
    """What a worker says before its engine is loaded (or when it cannot describe itself)."""
    return EngineDescription(device=device, device_name=device.upper(), gpu_memory_mb=None,
                             weights_label="", weights_loaded=False,
                             preset_iterations=preset_iterations())
