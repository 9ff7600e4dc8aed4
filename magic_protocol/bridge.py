"""stdio bridge to the MAGIC server, for GIMP 2.10's Python 2 plug-in.

GIMP 2.10 runs Python-Fu plug-ins with Python 2.7, which cannot import this package's client.
The plug-in starts `python3 -m magic_protocol.bridge` (from its own folder, with the Python 3
recorded in magic_gimp.json) and talks to it over stdin/stdout; the bridge uses
magic_protocol.client for everything else. Standard library + this package only.

Framing, both ways: a message is a JSON header frame followed by header["nframes"] binary
frames; every frame is a 4-byte big-endian length and that many bytes.

Requests (plug-in -> bridge):
  {"op": "handshake", "address", "timeout_s", "curve"}
      -> {"ok": true, "info": {"max_pixels", "presets", "modes", "device", "estimates"}}
  {"op": "submit", "address", "params", "width", "height", "timeout_s" | null, "curve",
   "nframes"}
      + the frames params["mode"] submits (protocol.submit_frame_names), in that order:
        image (RGBA), source mask, guide mask (1 channel each) [+ init (RGBA rough composite)];
        mode "layout": image, source labels, target labels (RGB label maps) [+ init];
        mode "label-map": image alone (params["labels"]: how many regions)
      -> any number of {"event": kind, "position", "iteration", "total", "eta_s", "stage"}
      -> {"ok": true, "seeds": [...], "sizes": [[w, h], ...], "notes": [...], "nframes": n}
         + n RGB frames
  {"op": "cancel"}  while a submit runs: cancels the job on the server
  {"op": "quit"}
"curve" (optional): the plug-in's CurveZMQ settings (gimp_plugin.settings.curve_options: the
server's public key and this client's key pair, as Z85 text or certificate files), read here by
magic_protocol.client.curve_keywords as the GIMP 3 host reads them.
Failures: {"ok": false, "kind": one of unreachable mismatch failed cancelled timeout missing
refused (magic_protocol.client.error_kind), "message": one line}. When stdin closes while a
job runs (GIMP ended the plug-in, e.g. the artist pressed cancel on the progress bar), the job
is cancelled on the server and the bridge exits.
"""

from __future__ import annotations

import json
import queue
import struct
import sys
import threading
from typing import Any, BinaryIO

from magic_protocol import protocol as P

_LEN = struct.Struct(">I")
MAX_FRAME = 2**31 - 1


def write_message(out: BinaryIO, header: dict[str, Any], frames: list[Any] = ()) -> None:
    header = dict(header, nframes=len(frames))
    parts = [json.dumps(header).encode("utf-8")] + [bytes(f) for f in frames]
    for p in parts:
        out.write(_LEN.pack(len(p)))
        out.write(p)
    out.flush()


def _read_exact(inp: BinaryIO, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = inp.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(inp: BinaryIO) -> tuple[dict[str, Any], list[bytes]] | None:
    """One message, or None at end of input. Raises ValueError on a malformed stream."""
    def frame() -> bytes | None:
        raw = _read_exact(inp, 4)
        if raw is None:
            return None
        (n,) = _LEN.unpack(raw)
        data = _read_exact(inp, n)
        if data is None:
            raise ValueError("stream ended inside a frame")
        return data

    head = frame()
    if head is None:
        return None
    header = json.loads(head.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")  # noqa: TRY004 - a bad stream
    frames = []
    for _ in range(int(header.get("nframes", 0))):
        data = frame()
        if data is None:
            raise ValueError("stream ended before all frames")
        frames.append(data)
    return header, frames


def job_request(c: Any, h: dict[str, Any], frames: list[bytes]) -> Any:
    """The client's JobRequest for a submit: the mode's frames by name, then an optional init
    (not for label maps)."""
    params = h["params"]
    mode = params.get("mode", "synthesize") if isinstance(params, dict) else None
    if mode not in P.MODES:
        raise ValueError(f"unknown mode {mode!r}")
    names = P.submit_frame_names(mode)
    counts = (len(names),) if mode == P.LABEL_MAP else (len(names), len(names) + 1)
    if len(frames) not in counts:
        raise ValueError(f"a {mode} submit needs the frames {names}"
                         + ("" if mode == P.LABEL_MAP else " (plus an init composite)"))
    given = dict(zip(names, frames))
    return c.JobRequest.from_params(
        int(h["width"]), int(h["height"]), given[P.FRAME_IMAGE],
        given.get(P.FRAME_SOURCE_MASK), given.get(P.FRAME_GUIDE_MASK), params,
        init_image=frames[len(names)] if len(frames) > len(names) else None,
        source_labels=given.get(P.FRAME_SOURCE_LABELS),
        target_labels=given.get(P.FRAME_TARGET_LABELS))


PYZMQ_HINT = ("pyzmq is missing in the Python 3 that GIMP 2.10's MAGIC plug-in uses ({python}): "
              "run `{python} -m pip install pyzmq`, or run magic-installer again.")


class Bridge:
    def __init__(self, inp: BinaryIO, out: BinaryIO, client_module: Any = None) -> None:
        self.out = out
        self.inbox: queue.Queue = queue.Queue()
        self.cancel = threading.Event()
        self.closed = threading.Event()
        self.c = client_module
        self.load_error = None
        if self.c is None:
            try:
                from magic_protocol import client
                self.c = client
            except ImportError:
                self.load_error = PYZMQ_HINT.format(python=sys.executable)
        self.reader = threading.Thread(target=self._read, args=(inp,), daemon=True)
        self.reader.start()

    def _read(self, inp: BinaryIO) -> None:
        try:
            while True:
                msg = read_message(inp)
                if msg is None:
                    break
                if msg[0].get("op") == "cancel":
                    self.cancel.set()
                    continue
                self.inbox.put(msg)
                if msg[0].get("op") == "quit":
                    return  # stop reading: a thread blocked on stdin would upset shutdown
        except (ValueError, OSError):
            pass
        self.closed.set()
        self.cancel.set()
        self.inbox.put(None)

    def fail(self, kind: str, message: str) -> None:
        write_message(self.out, {"ok": False, "kind": kind, "message": message})

    def kind_of(self, exc: Exception) -> str:
        return self.c.error_kind(exc)

    def keys(self, h: dict[str, Any]) -> dict[str, str]:
        """The request's CurveZMQ settings (`curve`) as MagicClient's keyword arguments."""
        return self.c.curve_keywords(h.get("curve")) or {}

    def handshake(self, h: dict[str, Any]) -> None:
        with self.c.MagicClient(h["address"], timeout_s=float(h.get("timeout_s") or 5),
                                retries=0, **self.keys(h)) as client:
            info = client.handshake()
        estimates = info.raw.get("estimates")
        write_message(self.out, {"ok": True, "info": {
            "max_pixels": info.limits.max_pixels, "presets": list(info.presets),
            "modes": list(info.modes), "device": info.device,
            "estimates": estimates if isinstance(estimates, dict) else {}}})

    def submit(self, h: dict[str, Any], frames: list[bytes]) -> None:
        c = self.c
        job = job_request(c, h, frames)
        self.cancel.clear()

        def on_event(ev: Any) -> None:
            if not self.closed.is_set():
                write_message(self.out, {"event": ev.kind, "position": ev.position,
                                         "iteration": ev.iteration, "total": ev.total,
                                         "eta_s": ev.eta_s, "stage": ev.stage})

        with c.MagicClient(h["address"], timeout_s=20.0, retries=1, **self.keys(h)) as client:
            result = client.submit(job, on_event, self.cancel.is_set,
                                   job_timeout_s=h.get("timeout_s"))
        images = [im for im in result.images if im.channels == 3]
        write_message(self.out, {"ok": True, "seeds": list(result.seeds),
                                 "sizes": [[im.width, im.height] for im in images],
                                 "notes": list(result.notes)},
                      [im.data for im in images])

    def serve(self) -> int:
        while True:
            msg = self.inbox.get()
            if msg is None:
                return 0
            header, frames = msg
            op = header.get("op")
            if op == "quit":
                return 0
            if self.load_error:
                self.fail("missing", self.load_error)
                continue
            try:
                if op == "handshake":
                    self.handshake(header)
                elif op == "submit":
                    self.submit(header, frames)
                else:
                    self.fail("failed", f"unknown bridge request {op!r}")
            except self.c.MagicError as exc:
                if not self.closed.is_set():
                    self.fail(self.kind_of(exc), str(exc))
            except (KeyError, TypeError, ValueError) as exc:
                self.fail("failed", f"bad bridge request: {exc}")
            except BrokenPipeError:
                return 0


def main() -> int:
    return Bridge(sys.stdin.buffer, sys.stdout.buffer).serve()


if __name__ == "__main__":
    sys.exit(main())
