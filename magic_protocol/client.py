"""Client library for the MAGIC server (standard library + pyzmq only: no numpy, no torch).

Used by the GIMP plug-in and by `magic-edit --server ADDR`. Pixels are plain buffers (bytes,
bytearray, memoryview) wrapped in RawImage with their width, height and channel count.

    client = MagicClient("tcp://127.0.0.1:5591")
    info = client.handshake()                      # ServerInfo (device, presets, limits, ...)
    result = client.submit(JobRequest(image, source_mask, guide_mask, mode="move"),
                           on_event=print, cancel_check=lambda: user_pressed_cancel)
    for img in result.images: ...                  # RawImage, RGB (3 channels)
    client.close()

Reliability (Lazy Pirate): every wait has a deadline. While a job runs the client sends a PING
every `heartbeat_s` (this is also the heartbeat that keeps the job alive on the server) and
expects to hear from the server at least every `timeout_s`. If it does not, the socket is closed
and reopened and the request is sent again, up to `retries` times (a job is resubmitted from
scratch: a restarted server has forgotten it). A MagicClient is not thread-safe: use it from one
thread, and cancel a running submit through `cancel_check`.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from magic_protocol import protocol as P
from magic_protocol.protocol import DEFAULT_ADDRESS, ErrorCode, FrameSpec, Limits

# ---------------------------------------------------------------------------- errors

class MagicError(Exception):
    """Base class of every error raised by this module; str() is a one-line human message."""


class ServerUnreachable(MagicError):
    """No answer from the server within the timeout (after all retries)."""


class AccessRefused(ServerUnreachable):
    """The server rejected this client's CurveZMQ key (it is not in its authorized clients)."""

    refused = True


class ProtocolMismatch(MagicError):
    """The server speaks another protocol version, or sent something this client cannot read."""


class JobFailed(MagicError):
    """The server refused or failed the job. `code` is a protocol.ErrorCode value."""

    def __init__(self, code: str, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.job_id = job_id


class JobCancelled(MagicError):
    """The job was cancelled (by cancel_check, cancel() or the server)."""

    def __init__(self, job_id: str | None, message: str = "job cancelled") -> None:
        super().__init__(message)
        self.job_id = job_id


class Timeout(MagicError):
    """The job did not finish within submit()'s job_timeout_s (it has been cancelled)."""


def error_kind(exc: BaseException) -> str:
    """The plug-ins' name for an error of this module (their RunnerError kinds): "refused" (the
    server rejected this client's CurveZMQ key), "unreachable", "mismatch", "cancelled",
    "timeout", or "failed" for anything else. The GIMP 3 host and the 2.10 bridge both use it."""
    if isinstance(exc, AccessRefused):
        return "refused"
    for cls, kind in ((ServerUnreachable, "unreachable"), (ProtocolMismatch, "mismatch"),
                      (JobCancelled, "cancelled"), (Timeout, "timeout")):
        if isinstance(exc, cls):
            return kind
    return "failed"


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class RawImage:
    """Row-major 8-bit pixels, `channels` interleaved (1 = mask, 3 = RGB, 4 = RGBA)."""

    width: int
    height: int
    channels: int
    data: bytes | bytearray | memoryview

    def __post_init__(self) -> None:
        n = memoryview(self.data).nbytes
        if n != self.width * self.height * self.channels:
            raise ValueError(f"{self.width}x{self.height}x{self.channels} image needs "
                             f"{self.width * self.height * self.channels} bytes, got {n}")

    def spec(self, name: str) -> FrameSpec:
        return FrameSpec(name, self.width, self.height, self.channels)


@dataclass
class JobRequest:
    """One edit. image: RGBA (4 channels); masks: 1 channel (> 127 = inside), all the same size
    (the plug-in aligns layers by their offsets first). init_image: optional RGBA rough
    composite, sent as the "init" frame: the server lays it over the image (alpha 0 = the
    image's pixel) and the synthesis starts from it. composite=False: a whole new image instead
    of the edit region pasted back; refine=False: no second, finer stage."""

    image: RawImage
    source_mask: RawImage | None = None  # None for layout and label-map jobs
    guide_mask: RawImage | None = None
    mode: str = "synthesize"
    samples: int = 3
    preset: str = "quality"
    iterations: int | None = None
    seed: int = 0
    resolution: int | None = None
    preview: bool = False
    init_image: RawImage | None = None
    init_from: str | None = None
    composite: bool = True
    refine: bool = True
    # mode "layout": label maps instead of the masks, flat RGB colours (3 channels) or grey
    # label indices (1 channel); mode "label-map": only the image, and `labels` regions
    source_labels: RawImage | None = None
    target_labels: RawImage | None = None
    labels: int | None = None

    @classmethod
    def from_params(cls, width: int, height: int, image: Any, source_mask: Any, guide_mask: Any,
                    params: dict[str, Any], init_image: Any = None, *,
                    source_labels: Any = None, target_labels: Any = None,
                    label_channels: int = 3) -> JobRequest:
        """A request from raw buffers and a params dict in the wire's form (the plug-in's).
        Layout jobs pass the label maps (label_channels each) and None for the masks."""

        def raw(data: Any, channels: int) -> RawImage | None:
            return None if data is None else RawImage(width, height, channels, data)

        return cls(
            image=RawImage(width, height, 4, image),
            source_mask=raw(source_mask, 1), guide_mask=raw(guide_mask, 1),
            source_labels=raw(source_labels, label_channels),
            target_labels=raw(target_labels, label_channels),
            labels=params.get("labels"),
            mode=params["mode"], samples=params["samples"], preset=params["preset"],
            seed=params["seed"], iterations=params.get("iterations"),
            resolution=params.get("resolution"), preview=bool(params.get("preview")),
            init_image=None if init_image is None else RawImage(width, height, 4, init_image),
            init_from=params.get("init_from"),
            composite=bool(params.get("composite", True)),
            refine=bool(params.get("refine", True)))

    def params(self) -> dict[str, Any]:
        return P.SubmitParams(
            mode=self.mode, samples=self.samples, preset=self.preset,
            iterations=self.iterations, seed=self.seed, resolution=self.resolution,
            preview=self.preview, init_from=self.init_from, composite=self.composite,
            refine=self.refine, labels=self.labels).to_dict()

    def frames(self) -> list[tuple[FrameSpec, Any]]:
        given = {P.FRAME_IMAGE: self.image, P.FRAME_SOURCE_MASK: self.source_mask,
                 P.FRAME_GUIDE_MASK: self.guide_mask, P.FRAME_SOURCE_LABELS: self.source_labels,
                 P.FRAME_TARGET_LABELS: self.target_labels}
        frames = []
        for name in P.submit_frame_names(self.mode):
            raw = given[name]
            if raw is None:
                raise ValueError(f"a {self.mode} job needs its {name.replace('_', ' ')}")
            frames.append((raw.spec(name), raw.data))
        if self.init_image is not None:
            frames.append((self.init_image.spec(P.FRAME_INIT), self.init_image.data))
        return frames


@dataclass
class Event:
    """A job event passed to submit()'s on_event.

    kind: "accepted" (job_id, position = jobs ahead of it), "progress" (iteration, total,
    eta_s, stage, previews when asked), "result", "error", "cancelled", or "reconnecting"
    (the server went silent; the client reconnects and resubmits; `header` has "attempt").
    """

    kind: str
    job_id: str | None
    header: dict[str, Any]
    position: int | None = None
    iteration: int | None = None
    total: int | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    stage: str | None = None
    previews: list[RawImage] = field(default_factory=list)


@dataclass
class JobResult:
    job_id: str
    images: list[RawImage]  # RGB (3 channels), at the request's image size
    seeds: list[int]
    predicted_class: int | None
    iterations: int | None
    elapsed_s: float | None
    metadata: dict[str, Any]  # the whole result header
    region: tuple[int, int, int, int] | None = None  # (top, left, bottom, right) synthesized
    notes: list[str] = field(default_factory=list)  # what the artist should know about the run


@dataclass
class ServerInfo:
    protocol: int
    server_version: str
    device: str
    gpu_name: str | None
    gpu_memory_bytes: int | None
    weights_loaded: bool
    weights_label: str
    presets: list[str]
    modes: list[str]
    limits: Limits
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServerInfo:
        return cls(
            protocol=int(d.get("protocol", P.PROTOCOL_VERSION)),
            server_version=str(d.get("server_version", "")),
            device=str(d.get("device", "")),
            gpu_name=d.get("gpu_name"),
            gpu_memory_bytes=d.get("gpu_memory_bytes"),
            weights_loaded=bool(d.get("weights_loaded", False)),
            weights_label=str(d.get("weights_label", "")),
            presets=list(d.get("presets", [])),
            modes=list(d.get("modes", P.MODES)),
            limits=Limits.from_dict(d.get("limits", {})),
            raw=d,
        )


# ---------------------------------------------------------------------------- keys

def load_curve_keys(keys_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """Keyword arguments for MagicClient from a folder made by `magic-server --keygen`:
    server.key (the server's public key) and client.key_secret (this client's key pair)."""
    from zmq.auth import load_certificate

    d = Path(keys_dir)
    server_public, _ = load_certificate(str(d / "server.key"))
    client_public, client_secret = load_certificate(str(d / "client.key_secret"))
    if client_secret is None:
        raise MagicError(f"{d / 'client.key_secret'} holds no secret key")
    return {"server_public_key": server_public, "client_public_key": client_public,
            "client_secret_key": client_secret}


def curve_keywords(options: dict[str, str] | None) -> dict[str, str] | None:
    """MagicClient's CurveZMQ keyword arguments (Z85 text) from the plug-ins' CurveZMQ settings
    (gimp_plugin.settings.curve_options: server_public_key, and client_keys or
    client_public_key + client_secret_key; each a Z85 key or a certificate file), or None when
    there is no server key. MagicError (one line) when a key cannot be read. The GIMP 3 host
    and the 2.10 bridge both use it."""
    if not options or not options.get("server_public_key"):
        return None
    from zmq.auth import load_certificate

    def key(value: str, what: str, secret: bool = False) -> str:
        value = value.strip()
        if len(value) == 40 and not os.path.exists(value):
            return value  # a Z85 key itself
        try:
            public, secret_key = load_certificate(value)
        except (OSError, ValueError) as exc:
            raise MagicError(f"cannot read the {what} from {value}: {exc}") from None
        found = secret_key if secret else public
        if found is None:
            raise MagicError(f"{value} holds no secret key ({what})")
        return found.decode("ascii")

    keys = options.get("client_keys")
    if keys:
        public, secret = key(keys, "client key pair"), key(keys, "client key pair", True)
    else:
        public, secret = options.get("client_public_key"), options.get("client_secret_key")
    if not (public and secret):
        raise MagicError("a CurveZMQ server key is set but no client key pair: add "
                         "client-keys=FILE (a client.key_secret made by magic-server --keygen) "
                         "or run magic-installer install --client-keys FILE")
    return {"server_public_key": key(options["server_public_key"], "server public key"),
            "client_public_key": public, "client_secret_key": secret}


# ---------------------------------------------------------------------------- client

def new_cancel_key() -> str:
    """A fresh secret for submit(cancel_key=...): 32 characters of [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(24)


class MagicClient:
    """Connection to one MAGIC server over a DEALER socket.

    timeout_s: longest silence from the server before it is considered gone (per attempt).
    heartbeat_s: PING interval while waiting for a job. retries: reconnect attempts.
    CurveZMQ: pass server_public_key plus client_secret_key and client_public_key (Z85 bytes or
    str, e.g. from load_curve_keys) to talk to a server bound with CURVE.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout_s: float = 10.0,
                 heartbeat_s: float = 1.0, retries: int = 3,
                 server_public_key: bytes | str | None = None,
                 client_secret_key: bytes | str | None = None,
                 client_public_key: bytes | str | None = None,
                 context: zmq.Context | None = None) -> None:
        if server_public_key is not None and (client_secret_key is None
                                              or client_public_key is None):
            raise ValueError("CurveZMQ needs server_public_key, client_secret_key and "
                             "client_public_key together")
        self.address = address
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.retries = retries
        self._curve = (server_public_key, client_secret_key, client_public_key)
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None  # CurveZMQ handshake events
        self._tags = itertools.count(1)
        self._prefix = f"{os.getpid():x}.{id(self) & 0xFFFF:x}."
        self.server_info: ServerInfo | None = None

    # -- public API ---------------------------------------------------------

    def handshake(self) -> ServerInfo:
        """Check the protocol version and fetch the server's capabilities."""
        msg = self._request(P.HELLO, {"client": f"magic_protocol.client pid {os.getpid()}"})
        info = msg.header.get("server")
        if not isinstance(info, dict):
            raise ProtocolMismatch("server's welcome carries no capabilities")
        self.server_info = ServerInfo.from_dict(info)
        return self.server_info

    def ping(self) -> float:
        """Round trip time in seconds."""
        t0 = time.monotonic()
        self._request(P.PING)
        return time.monotonic() - t0

    def status(self) -> dict[str, Any]:
        """Queue and worker state: {"running": {...} | None, "queued": [...], "clients": n}."""
        msg = self._request(P.STATUS)
        return {k: v for k, v in msg.header.items() if k not in ("v", "type", "req")}

    def cancel(self, job_id: str | None = None, *, cancel_key: str | None = None) -> bool:
        """Ask the server to cancel a job (any client may, given the id). True if it was known;
        the job's submitter then receives a "cancelled" event. cancel_key instead of the id:
        the job(s) submitted with that key (submit's cancel_key); a key whose job has not
        arrived yet is remembered by the server, which then cancels the job when it does."""
        if (job_id is None) == (cancel_key is None):
            raise ValueError("cancel() needs a job id or a cancel key")
        fields = {"job": job_id} if job_id is not None else {"cancel_key": cancel_key}
        try:
            msg = self._request(P.CANCEL, fields)
        except JobFailed as exc:
            if exc.code == ErrorCode.UNKNOWN_JOB:
                return False
            raise
        return bool(msg.header.get("found", True))

    def submit(self, job: JobRequest, on_event: Callable[[Event], None] | None = None,
               cancel_check: Callable[[], bool] | None = None, *,
               job_timeout_s: float | None = None, cancel_key: str | None = None) -> JobResult:
        """Run a job and block until it ends, pumping events into on_event.

        cancel_check is polled about ten times a second; when it returns True the job is
        cancelled and JobCancelled is raised. Raises ServerUnreachable, ProtocolMismatch,
        JobFailed(code, message), JobCancelled or Timeout. cancel_key (new_cancel_key()): a
        secret sent with the job, by which another process can cancel it (cancel()) even
        before the job's id is known, e.g. while it is still being sent.
        """
        params, frames = job.params(), job.frames()
        deadline = None if job_timeout_s is None else time.monotonic() + job_timeout_s
        for attempt in range(self.retries + 1):
            if attempt:
                if deadline is not None and time.monotonic() > deadline:
                    raise Timeout("the job did not finish in time (the server stopped answering)")
                self._reset()
                self._emit(on_event, Event("reconnecting", None, {"attempt": attempt}))
            outcome = self._run_job(params, frames, on_event, cancel_check, deadline,
                                    cancel_key)
            if outcome is not None:
                return outcome
        raise ServerUnreachable(f"the MAGIC server at {self.address} stopped answering "
                                f"(tried {self.retries + 1} times); is it running?")

    def close(self) -> None:
        if self._monitor is not None:
            if self._sock is not None:
                self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
            server_public, client_secret, client_public = self._curve
            if server_public is not None:
                sock.curve_serverkey = _key(server_public)
                sock.curve_secretkey = _key(client_secret)
                sock.curve_publickey = _key(client_public)
                self._monitor = sock.get_monitor_socket(
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
            sock.connect(self.address)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        self.close()

    def _silence_error(self) -> MagicError:
        """Why the server said nothing: a refused CurveZMQ handshake, or no server."""
        refused = failed = False
        while self._monitor is not None and self._monitor.poll(0, zmq.POLLIN):
            parts = self._monitor.recv_multipart()
            event = int.from_bytes(parts[0][:2], "little")
            refused |= event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            failed |= event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        if refused:
            return AccessRefused(
                f"the MAGIC server at {self.address} refused this client's CurveZMQ key: add "
                "its public key (client.key) to the server's authorized_clients folder, or use "
                "a client key pair the server knows")
        curve = self._curve[0] is not None
        hint = ("; is it running, and is the server key that server's public key (server.key)?"
                if curve or failed else "; is it running?")
        return ServerUnreachable(f"no answer from the MAGIC server at {self.address} within "
                                 f"{self.timeout_s:g} s{hint}")

    def _tag(self) -> str:
        return self._prefix + str(next(self._tags))

    def _send(self, msg_type: str, fields: dict[str, Any] | None = None,
              frames: list[tuple[FrameSpec, Any]] | tuple = (), req: str | None = None) -> bool:
        parts = P.encode(msg_type, fields, frames, req=req)
        try:
            self._socket().send_multipart(parts, copy=len(parts) == 1)
        except zmq.Again:
            return False
        return True

    def _recv(self, timeout_s: float) -> P.Message | None:
        sock = self._socket()
        if not sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
            return None
        parts = sock.recv_multipart(copy=False)
        views = [memoryview(f.buffer) if i else f.bytes for i, f in enumerate(parts)]
        try:
            return P.decode(views, expect=P.REPLY_TYPES, limits=_CLIENT_LIMITS)
        except P.ProtocolError as exc:
            raise ProtocolMismatch(f"unreadable message from the server ({exc.code}): {exc}; "
                                   "is the server the same version as this plug-in?") from None

    def _request(self, msg_type: str, fields: dict[str, Any] | None = None) -> P.Message:
        """One request/reply with Lazy Pirate retries."""
        for _attempt in range(self.retries + 1):
            tag = self._tag()
            if self._send(msg_type, fields, req=tag):
                end = time.monotonic() + self.timeout_s
                while (left := end - time.monotonic()) > 0:
                    if self._monitor is not None:  # CurveZMQ: a refusal is known at once
                        msg = self._recv(min(left, 0.2))
                        if msg is None:
                            if self._monitor.poll(0, zmq.POLLIN):
                                error = self._silence_error()
                                if isinstance(error, AccessRefused):
                                    self._reset()
                                    raise error
                            continue
                    else:
                        msg = self._recv(left)
                    if msg is None:
                        break
                    if msg.req != tag:
                        continue  # a late event of an earlier job, or a pong: not ours
                    if msg.type == P.ERROR:
                        _raise_error(msg)
                    return msg
            error = self._silence_error()
            self._reset()
            if isinstance(error, AccessRefused):
                raise error
        raise error

    def _run_job(self, params: dict[str, Any], frames: list[tuple[FrameSpec, Any]],
                 on_event: Callable[[Event], None] | None,
                 cancel_check: Callable[[], bool] | None,
                 deadline: float | None, cancel_key: str | None = None) -> JobResult | None:
        """One attempt. Returns None when the server went silent (caller retries)."""
        tag = self._tag()
        fields: dict[str, Any] = {"params": params}
        if cancel_key is not None:
            fields["cancel_key"] = cancel_key
        if not self._send(P.SUBMIT, fields, frames, req=tag):
            return None
        job_id: str | None = None
        cancel_wanted = cancel_sent = timed_out = False
        last_heard = last_ping = time.monotonic()
        while True:
            now = time.monotonic()
            if not cancel_wanted and cancel_check is not None and cancel_check():
                cancel_wanted = True
            if not cancel_wanted and deadline is not None and now > deadline:
                cancel_wanted = timed_out = True
            if cancel_wanted and job_id is not None and not cancel_sent:
                self._send(P.CANCEL, {"job": job_id}, req=self._tag())
                cancel_sent = True
            if now - last_ping >= self.heartbeat_s:
                self._send(P.PING, {"job": job_id} if job_id else None, req=self._tag())
                last_ping = now
            if now - last_heard > self.timeout_s:
                if cancel_wanted:
                    raise (Timeout("job timed out") if timed_out else JobCancelled(job_id))
                return None
            msg = self._recv(min(0.1, self.heartbeat_s))
            if msg is None:
                continue
            last_heard = time.monotonic()
            if (msg.type == P.PONG and job_id is not None and msg.header.get("job") == job_id
                    and msg.header.get("job_state") == "unknown"):
                # The server answers but has forgotten the job (it restarted): resubmit.
                # Its result would have arrived before this pong on the same connection.
                if cancel_wanted:
                    raise (Timeout("job timed out") if timed_out else JobCancelled(job_id))
                return None
            if msg.req != tag:
                if msg.type == P.ERROR and msg.header.get("code") == \
                        ErrorCode.UNSUPPORTED_VERSION:
                    _raise_error(msg)
                continue
            event = _event(msg)
            if msg.type == P.ACCEPTED:
                job_id = event.job_id
            self._emit(on_event, event)
            if msg.type == P.RESULT:
                return _result(msg)
            if msg.type == P.ERROR:
                _raise_error(msg)
            if msg.type == P.CANCELLED:
                if timed_out:
                    raise Timeout(f"job {job_id} did not finish in time and was cancelled")
                raise JobCancelled(job_id, str(msg.header.get("message", "job cancelled")))

    @staticmethod
    def _emit(on_event: Callable[[Event], None] | None, event: Event) -> None:
        if on_event is not None:
            on_event(event)


# Replies can carry several full-size results: no client-side size limit beyond sanity.
_CLIENT_LIMITS = Limits(max_message_bytes=2**62, max_header_bytes=16 * 2**20)


def _key(k: bytes | str | None) -> bytes:
    assert k is not None
    return k.encode("ascii") if isinstance(k, str) else k


def _images(msg: P.Message) -> list[RawImage]:
    return [RawImage(s.width, s.height, s.channels, data) for s, data in msg.frames]


def _event(msg: P.Message) -> Event:
    h = msg.header
    return Event(kind=msg.type, job_id=h.get("job"), header=h, position=h.get("position"),
                 iteration=h.get("iteration"), total=h.get("total"), eta_s=h.get("eta_s"),
                 elapsed_s=h.get("elapsed_s"), stage=h.get("stage"),
                 previews=_images(msg) if msg.type == P.PROGRESS else [])


def _result(msg: P.Message) -> JobResult:
    h = msg.header
    return JobResult(job_id=str(h.get("job")), images=_images(msg),
                     seeds=list(h.get("seeds", [])), predicted_class=h.get("predicted_class"),
                     iterations=h.get("iterations"), elapsed_s=h.get("elapsed_s"), metadata=h,
                     region=_region(h.get("region")),
                     notes=[str(n) for n in h.get("notes", []) if isinstance(n, str)])


def _region(raw: Any) -> tuple[int, int, int, int] | None:
    if (isinstance(raw, list) and len(raw) == 4
            and all(type(v) is int for v in raw)):
        return (raw[0], raw[1], raw[2], raw[3])
    return None


def _raise_error(msg: P.Message) -> None:
    code = str(msg.header.get("code", ErrorCode.INTERNAL))
    text = str(msg.header.get("message", "server error"))
    if code == ErrorCode.UNSUPPORTED_VERSION:
        raise ProtocolMismatch(f"{text} (client speaks protocol {P.PROTOCOL_VERSION}; update "
                               "the plug-in or the server so that they match)")
    raise JobFailed(code, text, msg.header.get("job"))
