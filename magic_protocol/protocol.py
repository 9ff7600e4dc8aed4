"""MAGIC wire protocol: the one definition shared by the server, the client library and the
GIMP plug-in. Standard library only (the plug-in runs inside GIMP's Python: no numpy, no torch).

A message is a ZeroMQ multipart message: frame 0 is a UTF-8 JSON object (the header), frames
1..n are raw pixel buffers described, in order, by the header's "frames" list. Clients use a
DEALER socket, the server a ROUTER socket (which prepends the peer's routing id; this module
never sees it). No pickles, no base64. See docs/protocol.md for the full description.

Every header carries:
  "v"    protocol version (PROTOCOL_VERSION); a peer answers other versions with an
         `unsupported_version` error.
  "type" one of REQUEST_TYPES (client -> server) or REPLY_TYPES (server -> client).
  "req"  optional request tag chosen by the client (string, at most 64 chars); every reply to
         a request, and every event of a submitted job, echoes it.
  "frames" optional list of {"name", "width", "height", "channels"}, one per pixel frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5591
DEFAULT_ADDRESS = f"tcp://127.0.0.1:{DEFAULT_PORT}"

# Client -> server requests.
HELLO = "hello"  # handshake -> WELCOME (server capabilities)
PING = "ping"  # liveness and heartbeat -> PONG; keeps the sender's jobs alive
SUBMIT = "submit"  # a job -> ACCEPTED, then PROGRESS*, then RESULT | ERROR | CANCELLED
CANCEL = "cancel"  # {"job": id} -> CANCEL_ACK; the submitter then gets CANCELLED
STATUS = "status"  # -> STATUS_REPORT (running job, queue)
REQUEST_TYPES = (HELLO, PING, SUBMIT, CANCEL, STATUS)

# Server -> client replies and job events.
WELCOME = "welcome"
PONG = "pong"
ACCEPTED = "accepted"
PROGRESS = "progress"
RESULT = "result"
ERROR = "error"
CANCELLED = "cancelled"
CANCEL_ACK = "cancel_ack"
STATUS_REPORT = "status_report"
REPLY_TYPES = (WELCOME, PONG, ACCEPTED, PROGRESS, RESULT, ERROR, CANCELLED, CANCEL_ACK,
               STATUS_REPORT)
# The only types that carry pixel frames.
FRAMED_TYPES = (SUBMIT, PROGRESS, RESULT)
# Events after which a job's story is over.
TERMINAL_EVENTS = (RESULT, ERROR, CANCELLED)

# Edits; the same values as magic_server.engine.api.MODES (a test keeps them in step).
# "layout" edits a whole label map (source_labels -> target_labels frames) instead of one mask.
LAYOUT = "layout"
EDIT_MODES = ("synthesize", "move", "copy", "reshape", "remove", LAYOUT)
# Not an edit: a first label map of the image (clusters of colour and texture) that the artist
# touches up; its result is one RGB frame, a flat colour per label.
LABEL_MAP = "label-map"
MODES = EDIT_MODES + (LABEL_MAP,)

# Submit frames, in this order; "init" is optional: the artist's rough composite (e.g. the
# moved layer over the photo), RGBA, which the server composites over "image" (alpha 0 = take
# the image's pixel) and the synthesis starts from instead of pure noise.
FRAME_IMAGE = "image"  # RGBA, 4 channels
FRAME_SOURCE_MASK = "source_mask"  # 1 channel, > 127 means "inside"
FRAME_GUIDE_MASK = "guide_mask"  # 1 channel, > 127 means "inside"
FRAME_INIT = "init"  # RGBA, 4 channels, optional
# A layout edit sends label maps instead of the two masks: flat colours, one per label (RGB,
# 3 channels) or grey label indices 0..15 (1 channel); the server reads them into labels
# (snapping anti-aliased boundary pixels) and names any target colour the source lacks.
FRAME_SOURCE_LABELS = "source_labels"
FRAME_TARGET_LABELS = "target_labels"
SUBMIT_FRAMES = {FRAME_IMAGE: (4,), FRAME_SOURCE_MASK: (1,), FRAME_GUIDE_MASK: (1,),
                 FRAME_INIT: (4,), FRAME_SOURCE_LABELS: (1, 3), FRAME_TARGET_LABELS: (1, 3)}
MASK_THRESHOLD = 127  # a mask pixel is inside when its value is > MASK_THRESHOLD
MIN_LABELS, MAX_LABELS = 2, 16  # label maps carry at most 16 labels; "labels" of a label-map job


def submit_frame_names(mode: str) -> list[str]:
    """The frames a SUBMIT of `mode` must carry, in order (then optionally FRAME_INIT)."""
    if mode == LABEL_MAP:
        return [FRAME_IMAGE]
    if mode == LAYOUT:
        return [FRAME_IMAGE, FRAME_SOURCE_LABELS, FRAME_TARGET_LABELS]
    return [FRAME_IMAGE, FRAME_SOURCE_MASK, FRAME_GUIDE_MASK]

MAX_REQ_TAG = 64
MAX_NAME = 64
MAX_SIDE = 65_535
MAX_SEED = 2**32 - 1
MAX_ITERATIONS = 1_000_000


class ErrorCode:
    """Stable error codes carried by ERROR messages ("code"); the "message" is for humans."""

    BAD_MESSAGE = "bad_message"  # not a multipart message we can read (no header, bad frames)
    BAD_JSON = "bad_json"  # header is not a UTF-8 JSON object
    UNSUPPORTED_VERSION = "unsupported_version"  # "v" missing or not PROTOCOL_VERSION
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # a header field is missing, of the wrong type or out of range
    BAD_FRAMES = "bad_frames"  # frame list does not match the frames sent, or wrong sizes
    TOO_LARGE = "too_large"  # message or image exceeds the server's limits
    QUEUE_FULL = "queue_full"
    UNKNOWN_JOB = "unknown_job"
    ENGINE_INPUT = "engine_input"  # the engine refused the inputs (e.g. empty mask)
    OUT_OF_MEMORY = "out_of_memory"  # GPU/host memory ran out; the server keeps serving
    INTERNAL = "internal"  # unexpected server-side failure; the server keeps serving
    SHUTTING_DOWN = "shutting_down"
    CLIENT_GONE = "client_gone"  # (server log only) the submitter stopped sending heartbeats

    ALL = (BAD_MESSAGE, BAD_JSON, UNSUPPORTED_VERSION, UNKNOWN_TYPE, BAD_FIELD, BAD_FRAMES,
           TOO_LARGE, QUEUE_FULL, UNKNOWN_JOB, ENGINE_INPUT, OUT_OF_MEMORY, INTERNAL,
           SHUTTING_DOWN, CLIENT_GONE)


class ProtocolError(Exception):
    """A message that breaks the protocol. `code` is one of ErrorCode; str() is for humans."""

    def __init__(self, code: str, message: str, req: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req = req


@dataclass(frozen=True)
class Limits:
    """Server-side limits; sent in the handshake. Defaults fit a 24 MP photo (6000x4000)
    with its two masks and an init composite in one message."""

    max_pixels: int = 25_000_000
    max_message_bytes: int = 260 * 2**20
    max_header_bytes: int = 64 * 2**10
    max_samples: int = 16
    max_queue: int = 32  # queued jobs, all clients together
    max_jobs_per_client: int = 8

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Limits:
        known = {k: int(v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class FrameSpec:
    """Description of one raw pixel frame: row-major, 8 bits per channel, no padding."""

    name: str
    width: int
    height: int
    channels: int

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "height": self.height,
                "channels": self.channels}


@dataclass
class Message:
    """A decoded message: the header dict and the pixel frames (bytes-like), paired with specs."""

    type: str
    header: dict[str, Any]
    frames: list[tuple[FrameSpec, Any]] = field(default_factory=list)

    @property
    def req(self) -> str | None:
        return self.header.get("req")

    def frame(self, name: str) -> tuple[FrameSpec, Any] | None:
        for spec, data in self.frames:
            if spec.name == name:
                return spec, data
        return None


@dataclass(frozen=True)
class SubmitParams:
    """Validated job parameters (the "params" object of a SUBMIT header)."""

    mode: str = "synthesize"
    samples: int = 3
    preset: str = "quality"
    iterations: int | None = None
    seed: int = 0
    resolution: int | None = None  # None: the server's default working resolution
    preview: bool = False  # send downscaled preview frames with progress events
    init_from: str | None = None  # optional label of the "init" frame's origin; needs the frame
    composite: bool = True  # synthesize only the edit region and paste it back (False: all new)
    refine: bool = True  # a second stage at twice the working resolution
    labels: int | None = None  # label-map jobs: how many regions (MIN_LABELS..MAX_LABELS)

    def to_dict(self) -> dict[str, Any]:
        """The wire form. Fields added after version 1 was released (composite, refine) are
        left out at their defaults, so that servers older than them still take the job."""
        return {k: v for k, v in asdict(self).items()
                if v is not None and not (k in ADDED_PARAMS and v == ADDED_PARAMS[k])}


# Optional params added to version 1 later (compatible: older servers never see them unless
# a client asks for a non-default value).
ADDED_PARAMS: dict[str, Any] = {"composite": True, "refine": True}


# ---------------------------------------------------------------------------- encoding

def encode(msg_type: str, fields: dict[str, Any] | None = None,
           frames: Sequence[tuple[FrameSpec, Any]] = (), *, req: str | None = None) -> list[Any]:
    """Build the frames of one message: [header JSON bytes, *pixel buffers].

    Pixel buffers are passed through untouched (bytes, bytearray, memoryview or anything with
    the buffer protocol), so large images are not copied here.
    """
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": msg_type}
    if req is not None:
        header["req"] = req
    if fields:
        header.update(fields)
    if frames:
        header["frames"] = [spec.to_dict() for spec, _ in frames]
    parts: list[Any] = [json.dumps(header, separators=(",", ":"), allow_nan=False).encode()]
    for spec, data in frames:
        if _nbytes(data) != spec.nbytes:
            raise ValueError(f"frame {spec.name!r}: {_nbytes(data)} bytes, expected "
                             f"{spec.nbytes} for {spec.width}x{spec.height}x{spec.channels}")
        parts.append(data)
    return parts


def encode_error(code: str, message: str, *, req: str | None = None,
                 job: str | None = None) -> list[Any]:
    fields: dict[str, Any] = {"code": code, "message": message}
    if job is not None:
        fields["job"] = job
    return encode(ERROR, fields, req=req)


# ---------------------------------------------------------------------------- decoding

def decode(parts: Sequence[Any], *, expect: Sequence[str] = REQUEST_TYPES,
           limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse and check one multipart message (without the ROUTER's routing id).

    `expect` is the set of acceptable types (REQUEST_TYPES on the server, REPLY_TYPES on the
    client). Raises ProtocolError with a stable code on anything malformed; never anything
    else for any input.
    """
    if not parts:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message")
    total = sum(_nbytes(p) for p in parts)
    if total > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message is {total} bytes; this server "
                            f"accepts at most {limits.max_message_bytes}")
    raw = bytes(parts[0])
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header is {len(raw)} bytes; at most "
                            f"{limits.max_header_bytes}")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "header must be a JSON object")
    req = header.get("req")
    if req is not None and not (isinstance(req, str) and len(req) <= MAX_REQ_TAG):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'req' must be a string of at most "
                            f"{MAX_REQ_TAG} characters")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"protocol version {version!r} is not "
                            f"supported; this side speaks version {PROTOCOL_VERSION}", req)
    msg_type = header.get("type")
    if not isinstance(msg_type, str) or msg_type not in expect:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {msg_type!r}", req)
    specs = _frame_specs(header.get("frames", []), req)
    if specs and msg_type not in FRAMED_TYPES:
        raise ProtocolError(ErrorCode.BAD_FRAMES, f"{msg_type!r} messages carry no frames", req)
    data = parts[1:]
    if len(specs) != len(data):
        raise ProtocolError(ErrorCode.BAD_FRAMES, f"header lists {len(specs)} frame(s), "
                            f"message has {len(data)}", req)
    for spec, buf in zip(specs, data):
        if _nbytes(buf) != spec.nbytes:
            raise ProtocolError(ErrorCode.BAD_FRAMES, f"frame {spec.name!r} is {_nbytes(buf)} "
                                f"bytes; {spec.width}x{spec.height}x{spec.channels} needs "
                                f"{spec.nbytes}", req)
    return Message(msg_type, header, list(zip(specs, data)))


def validate_submit(msg: Message, limits: Limits = DEFAULT_LIMITS,
                    presets: Sequence[str] | None = None) -> SubmitParams:
    """Check a decoded SUBMIT: frames (names, channels, equal sizes, pixel limit) and params.

    `presets`: names the server knows (None: any short string is accepted).
    """
    req = msg.req
    params = msg.header.get("params", {})
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, "'params' must be an object", req)
    p = SubmitParams()
    mode = _get(params, "mode", str, p.mode, req)
    if mode not in MODES:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"mode {mode!r} is not one of {MODES}", req)
    names = [spec.name for spec, _ in msg.frames]
    required = submit_frame_names(mode)
    allowed = [required] if mode == LABEL_MAP else [required, required + [FRAME_INIT]]
    if names not in allowed:
        extra = "" if mode == LABEL_MAP else f" (plus optional {FRAME_INIT!r})"
        raise ProtocolError(ErrorCode.BAD_FRAMES, f"{mode} submit frames must be {required}"
                            f"{extra}, got {names}", req)
    first = msg.frames[0][0]
    if first.width * first.height > limits.max_pixels:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"image is {first.width}x{first.height} = "
                            f"{first.width * first.height} pixels; this server accepts at most "
                            f"{limits.max_pixels}", req)
    for spec, _ in msg.frames:
        channels = SUBMIT_FRAMES[spec.name]
        if spec.channels not in channels:
            wanted = " or ".join(str(c) for c in channels)
            raise ProtocolError(ErrorCode.BAD_FRAMES, f"frame {spec.name!r} must have "
                                f"{wanted} channel(s), not {spec.channels}", req)
        if (spec.width, spec.height) != (first.width, first.height):
            what = "label maps" if mode == LAYOUT else "masks"
            raise ProtocolError(ErrorCode.BAD_FRAMES, f"frame {spec.name!r} is {spec.width}x"
                                f"{spec.height}, image is {first.width}x{first.height}: align "
                                f"the {what} to the image first", req)
    unknown = set(params) - set(SubmitParams.__dataclass_fields__)
    if unknown:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"unknown parameter(s): {sorted(unknown)}", req)
    labels = _get_int(params, "labels", None, MIN_LABELS, MAX_LABELS, req, optional=True)
    if (labels is None) == (mode == LABEL_MAP):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'labels' (how many regions, {MIN_LABELS}.."
                            f"{MAX_LABELS}) goes with, and only with, mode {LABEL_MAP!r}", req)
    preset = _get(params, "preset", str, p.preset, req)
    if presets is not None and preset not in presets:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"preset {preset!r} is not one of "
                            f"{list(presets)}", req)
    if len(preset) > MAX_NAME:
        raise ProtocolError(ErrorCode.BAD_FIELD, "preset name too long", req)
    init_from = _get(params, "init_from", str, None, req, optional=True)
    if init_from is not None and msg.frame(FRAME_INIT) is None:
        raise ProtocolError(ErrorCode.BAD_FIELD, "'init_from' needs an 'init' frame", req)
    if init_from is not None and len(init_from) > MAX_NAME:
        raise ProtocolError(ErrorCode.BAD_FIELD, "'init_from' too long", req)
    return SubmitParams(
        mode=mode,
        samples=_get_int(params, "samples", p.samples, 1, limits.max_samples, req),
        preset=preset,
        iterations=_get_int(params, "iterations", None, 1, MAX_ITERATIONS, req, optional=True),
        seed=_get_int(params, "seed", p.seed, 0, MAX_SEED, req),
        resolution=_get_int(params, "resolution", None, 32, 1024, req, optional=True),
        preview=_get(params, "preview", bool, p.preview, req),
        init_from=init_from,
        composite=_get(params, "composite", bool, p.composite, req),
        refine=_get(params, "refine", bool, p.refine, req),
        labels=labels,
    )


def job_id_field(msg: Message) -> str:
    """The "job" field of a CANCEL (or any job event), checked."""
    job = msg.header.get("job")
    if not isinstance(job, str) or not 0 < len(job) <= MAX_NAME:
        raise ProtocolError(ErrorCode.BAD_FIELD, "'job' must be a job id string", msg.req)
    return job


CANCEL_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MIN_CANCEL_KEY = 16


def cancel_key_field(msg: Message) -> str | None:
    """The optional "cancel_key" of a SUBMIT or CANCEL header, checked: a secret the client
    chose before sending the job (16..64 characters of [A-Za-z0-9_-]), so that it can have the
    job cancelled before it knows the job's id. None when absent."""
    key = msg.header.get("cancel_key")
    if key is None:
        return None
    if not (isinstance(key, str) and MIN_CANCEL_KEY <= len(key) <= MAX_NAME
            and set(key) <= CANCEL_KEY_CHARS):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"'cancel_key' must be {MIN_CANCEL_KEY}.."
                            f"{MAX_NAME} characters of A-Z, a-z, 0-9, '-' and '_'", msg.req)
    return key


# ---------------------------------------------------------------------------- helpers

def _frame_specs(raw: Any, req: str | None) -> list[FrameSpec]:
    if not isinstance(raw, list):
        raise ProtocolError(ErrorCode.BAD_FRAMES, "'frames' must be a list", req)
    specs = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise ProtocolError(ErrorCode.BAD_FRAMES, f"frames[{i}] must be an object", req)
        name = d.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ProtocolError(ErrorCode.BAD_FRAMES, f"frames[{i}].name must be a string", req)
        dims = []
        for key, top in (("width", MAX_SIDE), ("height", MAX_SIDE), ("channels", 4)):
            val = d.get(key)
            if type(val) is not int or not 1 <= val <= top:
                raise ProtocolError(ErrorCode.BAD_FRAMES, f"frames[{i}].{key} must be an "
                                    f"integer in 1..{top}", req)
            dims.append(val)
        specs.append(FrameSpec(name, *dims))
    return specs


def _get(params: dict, key: str, kind: type, default: Any, req: str | None,
         optional: bool = False) -> Any:
    val = params.get(key, default)
    if val is None and optional:
        return None
    if type(val) is not kind:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"parameter {key!r} must be of type "
                            f"{kind.__name__}", req)
    return val


def _get_int(params: dict, key: str, default: int | None, lo: int, hi: int, req: str | None,
             optional: bool = False) -> Any:
    val = _get(params, key, int, default, req, optional)
    if val is not None and not lo <= val <= hi:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"parameter {key!r} must be in {lo}..{hi}", req)
    return val


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _nbytes(buf: Any) -> int:
    if isinstance(buf, (bytes, bytearray)):
        return len(buf)
    nbytes = getattr(buf, "nbytes", None)  # memoryview, array-likes
    if isinstance(nbytes, int):
        return nbytes
    buffer = getattr(buf, "buffer", None)  # zmq.Frame
    if buffer is not None:
        return memoryview(buffer).nbytes
    return memoryview(buf).nbytes


def finite_or_none(x: Any) -> float | None:
    """JSON-safe float (NaN/inf become None)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
