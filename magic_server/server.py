"""magic-server: a long-lived ZeroMQ job server that keeps the classifier loaded.

One event loop owns the ROUTER socket (zmq.Poller); one worker thread per device runs the
engine (jobs.py). The worker's events come back through a queue plus an inproc PAIR socket
that wakes the loop, so only the loop thread ever touches the ROUTER. Protocol:
magic_protocol/protocol.py and docs/protocol.md.
"""

from __future__ import annotations

import argparse
import errno
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq

from magic_protocol import protocol as P
from magic_protocol.protocol import DEFAULT_ADDRESS, DEFAULT_LIMITS, ErrorCode, Limits
from magic_server.jobs import FairQueue, Job, Worker, WorkerEvent
from magic_server.server_curve import (
    CurveConfig,
    CurveSetupError,
    default_keys_dir,
    is_local_endpoint,
    keygen,
)

log = logging.getLogger("magic_server")

SERVER_VERSION = "0.1.0"
DEFAULT_HEARTBEAT_TIMEOUT_S = 10.0
HOUSEKEEPING_INTERVAL_S = 0.2
MAX_MESSAGES_PER_TURN = 64  # keep worker events flowing even under a flood of requests


class BindError(Exception):
    """The address cannot be bound (user-facing, one line)."""


class Server:
    """The job server. `engine` follows magic_server.engine.synthesis.Engine's contract."""

    def __init__(self, engine: Any, address: str = DEFAULT_ADDRESS, *,
                 limits: Limits = DEFAULT_LIMITS,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 curve: CurveConfig | None = None, default_resolution: int = 224,
                 context: zmq.Context | None = None) -> None:
        if curve is None and not is_local_endpoint(address):
            raise CurveSetupError(f"{address} is reachable from other machines: binding it needs "
                                  "CurveZMQ keys (run `magic-server --keygen`, then pass --curve)")
        self.engine = engine
        self.address = address
        self.limits = limits
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.curve = curve
        self.ctx = context or zmq.Context()
        self._own_ctx = context is None
        self.queue = FairQueue()
        self.running: Job | None = None
        self.jobs: dict[str, Job] = {}  # queued and running, by id
        self.last_seen: dict[bytes, float] = {}
        self.client_names: dict[bytes, int] = {}
        self._events: queue.Queue[WorkerEvent] = queue.Queue()
        self._stop = threading.Event()
        self._wake_addr = f"inproc://magic-wake-{id(self):x}"
        self._auth = None
        self.capabilities = self._capabilities()
        self.router = self._bind()
        self._wake_rx = self.ctx.socket(zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx_local = threading.local()
        self.worker = Worker(engine, self._emit, default_resolution=default_resolution,
                             on_exit=self._close_wake_tx)

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
        described: dict[str, Any] = {}
        try:
            described = dict(self.engine.describe())
        except Exception as exc:  # noqa: BLE001 - capabilities are informative only
            log.warning("engine.describe() failed: %s", exc)
        presets = described.get("presets")
        if isinstance(presets, dict):
            presets = list(presets)
        if not presets:
            try:
                from magic_server.engine.presets import PRESETS
                presets = list(PRESETS)
            except ImportError:
                presets = ["quality"]
        caps = {k: v for k, v in described.items() if _json_safe(v)}
        device = str(described.get("device", getattr(self.engine, "device", "cpu")))
        label = str(described.get("weights_label") or described.get("weights")
                    or getattr(self.engine, "weights_label", ""))
        gpu_name = described.get("gpu_name")
        if gpu_name is None and not device.startswith("cpu"):
            gpu_name = described.get("device_name")
        gpu_bytes = described.get("gpu_memory_bytes")
        if gpu_bytes is None and isinstance(described.get("gpu_memory_mb"), int):
            gpu_bytes = described["gpu_memory_mb"] * 2**20
        caps.update({
            "protocol": P.PROTOCOL_VERSION,
            "server_version": SERVER_VERSION,
            "device": device,
            "gpu_name": gpu_name,
            "gpu_memory_bytes": gpu_bytes,
            "weights_label": label,
            "weights_loaded": bool(described.get("weights_loaded",
                                                 not label.lower().startswith("untrained"))),
            "presets": [str(p) for p in presets],
            "modes": list(P.MODES),
            "limits": self.limits.to_dict(),
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
            "curve": self.curve is not None,
        })
        if isinstance(described.get("presets"), dict):
            caps["preset_iterations"] = described["presets"]
        return caps

    # -- running ----------------------------------------------------------------

    def endpoint(self) -> str:
        return self.router.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        """Ask the loop to finish (safe from signal handlers and other threads)."""
        self._stop.set()

    def serve_forever(self) -> None:
        self.worker.start()
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
        if self.running is not None:
            self.running.cancel_reason = "the server is shutting down"
            self.running.cancel.set()
        if self.worker.ident is not None:  # started
            self.worker.stop()
            self.worker.join(timeout=5)
        self._drain_worker_events()
        self.router.close(linger=0)
        self._wake_rx.close(linger=0)
        self._stop_auth()
        if self.worker.is_alive():  # an engine call that ignores cancel: do not wait for it
            log.warning("the engine did not stop within 5 s; leaving it behind")
        elif self._own_ctx:
            self.ctx.term()

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
            tx = self.ctx.socket(zmq.PAIR)
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
            job = ev.job
            fields = {"job": job.id, **ev.fields}
            self._send(job.owner, P.encode(ev.kind, fields, ev.frames, req=job.req))
            if ev.kind in P.TERMINAL_EVENTS:
                elapsed = time.monotonic() - job.submitted_at
                detail = ev.fields.get("code") or ev.fields.get("message") or ""
                log.info("job %s %s after %.1f s %s", job.id[:8], ev.kind, elapsed, detail)
                job.state = "done"
                if self.running is job:
                    self.running = None
                self._forget(job)

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
        self._send(who, P.encode(P.WELCOME, {"server": self.capabilities}, req=msg.req))

    def _on_ping(self, who: bytes, msg: P.Message) -> None:
        fields: dict[str, Any] = {"time": time.time()}
        if "job" in msg.header:  # a heartbeat for a job: tell whether it is still known
            job = self.jobs.get(P.job_id_field(msg))
            fields.update(job=msg.header["job"], job_state=job.state if job else "unknown")
        self._send(who, P.encode(P.PONG, fields, req=msg.req))

    def _on_status(self, who: bytes, msg: P.Message) -> None:
        running = self.running.summary(who, 0) if self.running else None
        offset = 1 if self.running else 0
        queued = [j.summary(who, i + offset) for i, j in enumerate(self.queue.order())]
        self._send(who, P.encode(P.STATUS_REPORT, {
            "running": running, "queued": queued, "clients": len(self.last_seen)}, req=msg.req))

    def _on_cancel(self, who: bytes, msg: P.Message) -> None:
        job_id = P.job_id_field(msg)
        job = self.jobs.get(job_id)
        if job is None:
            raise P.ProtocolError(ErrorCode.UNKNOWN_JOB, f"no queued or running job {job_id}",
                                  msg.req)
        self._cancel(job, f"cancelled by client {self._client_name(who)}")
        self._send(who, P.encode(P.CANCEL_ACK, {"job": job_id, "found": True}, req=msg.req))

    def _on_submit(self, who: bytes, msg: P.Message) -> None:
        params = P.validate_submit(msg, self.limits, self.capabilities["presets"])
        if len(self.queue) >= self.limits.max_queue:
            raise P.ProtocolError(ErrorCode.QUEUE_FULL, f"the queue is full ({len(self.queue)} "
                                  "jobs); try again later", msg.req)
        mine = self.queue.count_for(who) + (self.running is not None
                                            and self.running.owner == who)
        if mine >= self.limits.max_jobs_per_client:
            raise P.ProtocolError(ErrorCode.QUEUE_FULL, f"you already have {mine} jobs waiting; "
                                  "wait for them or cancel some", msg.req)
        image = msg.frames[0][0]
        job = Job(owner=who, req=msg.req, params=params,
                  frames={spec.name: (spec, data) for spec, data in msg.frames},
                  width=image.width, height=image.height)
        self.queue.push(job)
        self.jobs[job.id] = job
        position = self.queue.order().index(job) + (self.running is not None)
        extras = "".join(text for on, text in (
            (msg.frame(P.FRAME_INIT) is not None, ", from an init composite"),
            (not params.composite, ", whole image"), (not params.refine, ", no refine")) if on)
        log.info("job %s from client %s: %s %dx%d, %d sample(s), preset %s%s, queue position %d",
                 job.id[:8], self._client_name(who), params.mode, job.width, job.height,
                 params.samples, params.preset, extras, position)
        self._send(who, P.encode(P.ACCEPTED, {"job": job.id, "position": position}, req=msg.req))

    # -- queue ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.running is not None or self._stop.is_set():
            return
        job = self.queue.pop()
        if job is None:
            return
        job.state = "running"
        self.running = job
        log.info("job %s started", job.id[:8])
        self.worker.start_job(job)

    def _cancel(self, job: Job, reason: str) -> None:
        job.cancel_reason = reason
        job.cancel.set()
        if self.queue.remove(job):
            self._send(job.owner, P.encode(P.CANCELLED, {"job": job.id, "message": reason},
                                           req=job.req))
            log.info("job %s cancelled while queued: %s", job.id[:8], reason)
            self._forget(job)
        # a running job: the worker stops at the engine's next iteration and reports CANCELLED

    def _forget(self, job: Job) -> None:
        job.release()
        self.jobs.pop(job.id, None)

    def _reap_silent_clients(self, now: float) -> None:
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


def _json_safe(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


# ------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="magic-server", description="MAGIC synthesis job server "
                                 "(protocol: docs/protocol.md)")
    ap.add_argument("--bind", default=DEFAULT_ADDRESS, metavar="tcp://HOST:PORT",
                    help=f"address to listen on (default {DEFAULT_ADDRESS}; ipc:// accepted; "
                         "a non-loopback address needs CurveZMQ keys)")
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, mps, cpu or auto")
    ap.add_argument("--weights", default=None, metavar="FILE|untrained",
                    help="classifier weights (default: the installed ones)")
    ap.add_argument("--keygen", action="store_true",
                    help="create a server and a client CurveZMQ key pair and exit")
    ap.add_argument("--keys", type=Path, default=None, metavar="FOLDER",
                    help=f"CurveZMQ keys folder (default {default_keys_dir()})")
    ap.add_argument("--curve", action="store_true",
                    help="require CurveZMQ even on a loopback address")
    ap.add_argument("--heartbeat-timeout", type=float, default=DEFAULT_HEARTBEAT_TIMEOUT_S,
                    metavar="SECONDS", help="cancel a job whose client is silent this long")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_LIMITS.max_pixels)
    ap.add_argument("--max-message-mb", type=int,
                    default=DEFAULT_LIMITS.max_message_bytes // 2**20)
    ap.add_argument("--resolution", type=int, default=224,
                    help="default working resolution when a job does not set one")
    ap.add_argument("--no-warm-up", action="store_true", help=argparse.SUPPRESS)
    return ap


def load_engine(device_name: str, weights: str | None) -> Any:
    """The real engine: classifier loaded once on the device."""
    from magic_server.classifier import load_classifier
    from magic_server.devices import resolve_device
    from magic_server.engine.synthesis import Engine

    device = resolve_device(device_name)
    progress = None
    try:
        from magic_server.weights_store import ProgressBar
        progress = ProgressBar("classifier weights")
    except (ImportError, TypeError):
        pass
    model, label = load_classifier(weights, device, progress=progress)
    return Engine(model, device, label)


def main(argv: Sequence[str] | None = None,
         engine_factory: Callable[[argparse.Namespace], Any] | None = None) -> int:
    """Entry point. `engine_factory(args)` replaces the real engine (tests use a stand-in)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s magic-server %(message)s", datefmt="%H:%M:%S")
    keys_dir = args.keys or default_keys_dir()
    try:
        if args.keygen:
            for path in keygen(keys_dir):
                print(f"wrote {path}")
            print(f"copy server.key, client.key and client.key_secret from {keys_dir} to the "
                  "client machine (magic-edit --server uses them)")
            return 0
        # Any non-loopback address gets CURVE; CurveConfig says how to make keys if missing.
        curve = CurveConfig(keys_dir) if args.curve or not is_local_endpoint(args.bind) else None
        limits = Limits(max_pixels=args.max_pixels,
                        max_message_bytes=args.max_message_mb * 2**20)
        # Bind before the slow part (loading weights) so that a busy port fails at once.
        engine_box: dict[str, Any] = {}
        server = Server(_LazyEngine(engine_box), args.bind, limits=limits,
                        heartbeat_timeout_s=args.heartbeat_timeout, curve=curve,
                        default_resolution=args.resolution)
    except (CurveSetupError, BindError) as exc:
        print(f"magic-server: {exc}", file=sys.stderr)
        return 2
    try:
        engine = engine_factory(args) if engine_factory else load_engine(args.device,
                                                                          args.weights)
        engine_box["engine"] = engine
        if str(getattr(engine, "weights_label", "")).startswith("untrained"):
            log.warning("using an UNTRAINED classifier (random weights): results will not look "
                        "like MAGIC's; install the weights with `magic-installer weights`")
        if not args.no_warm_up:
            log.info("warming up")
            engine.warm_up()
        server.capabilities = server._capabilities()
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        server._shutdown()
        print(f"magic-server: cannot start the engine: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    caps = server.capabilities
    print(f"magic-server ready on {server.endpoint()} (device {caps['device']}, weights "
          f"{caps['weights_label'] or 'unknown'})", flush=True)
    server.serve_forever()
    log.info("stopped")
    return 0


class _LazyEngine:
    """Lets main() bind the port before the engine exists; forwards to the real engine."""

    def __init__(self, box: dict[str, Any]) -> None:
        self._box = box

    def __getattr__(self, name: str) -> Any:
        engine = self._box.get("engine")
        if engine is None:
            if name == "describe":
                return dict
            raise AttributeError(name)
        return getattr(engine, name)


if __name__ == "__main__":
    sys.exit(main())
