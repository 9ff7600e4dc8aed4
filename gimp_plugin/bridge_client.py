# ruff: noqa: UP004, UP024, UP031  (Python 2.7 compatible: GIMP 2.10)
"""GIMP 2.10's runner: talks to the MAGIC server through `python3 -m magic_protocol.bridge`.

GIMP 2.10 runs this plug-in under Python 2.7, and the shared client is Python 3 only, so the
plug-in keeps a Python 3 child process (the bridge) for the length of one run and exchanges
length-prefixed frames with it over pipes: no temporary files. If GIMP kills the plug-in (the
artist cancelled from the progress bar), the bridge sees its stdin close and cancels the job.
Python 2.7 + 3 common subset, standard library only.
"""

import json
import os
import struct
import subprocess
import sys
import threading

from gimp_plugin.workflow import RunnerError

try:
    import queue
except ImportError:  # Python 2
    import Queue as queue

_LEN = struct.Struct(">I")
MODE_FRAMES = ("source_mask", "guide_mask", "source_labels", "target_labels")

NO_PYTHON = ("MAGIC for GIMP 2.10 needs Python 3 with pyzmq to reach the server, and `%s` could "
             "not be started (%s). Install Python 3 and pyzmq, then run magic-installer again so "
             "that magic_gimp.json records its path.")


def default_python():
    return "py" if sys.platform == "win32" else "python3"


def write_message(out, header, frames=()):
    header = dict(header)
    header["nframes"] = len(frames)
    parts = [json.dumps(header).encode("utf-8")] + [bytes(f) for f in frames]
    for p in parts:
        out.write(_LEN.pack(len(p)))
        out.write(p)
    out.flush()


def _read_exact(inp, n):
    chunks, left = [], n
    while left:
        chunk = inp.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(inp):
    raw = _read_exact(inp, 4)
    if raw is None:
        return None
    head = _read_exact(inp, _LEN.unpack(raw)[0])
    if head is None:
        return None
    header = json.loads(head.decode("utf-8"))
    frames = []
    for _ in range(int(header.get("nframes", 0))):
        raw = _read_exact(inp, 4)
        data = None if raw is None else _read_exact(inp, _LEN.unpack(raw)[0])
        if data is None:
            return None
        frames.append(data)
    return header, frames


class BridgeRunner(object):
    """workflow's runner for GIMP 2.10 (see gimp_plugin.workflow for the contract)."""

    def __init__(self, folder, python=None, command=None, curve=None):
        self.folder = folder  # the plug-in folder that holds magic_protocol/
        self.curve = curve or None  # settings.curve_options(): the bridge reads the keys
        self.command = command or [python or default_python(), "-m", "magic_protocol.bridge"]
        if self.command[0] == "py" and len(self.command) == 3:
            self.command = ["py", "-3"] + self.command[1:]
        self.proc = None
        self.inbox = queue.Queue()

    def _start(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["PYTHONPATH"] = self.folder
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, cwd=self.folder, env=env,
                                         close_fds=sys.platform != "win32")
        except (OSError, ValueError) as exc:
            raise RunnerError("missing", NO_PYTHON % (self.command[0], exc))
        self.inbox = queue.Queue()
        thread = threading.Thread(target=self._read, args=(self.proc.stdout, self.inbox))
        thread.daemon = True
        thread.start()

    @staticmethod
    def _read(stream, inbox):
        try:
            while True:
                msg = read_message(stream)
                inbox.put(msg)
                if msg is None:
                    return
        except (ValueError, IOError, OSError):
            inbox.put(None)

    def _send(self, header, frames=()):
        self._start()
        try:
            write_message(self.proc.stdin, header, frames)
        except (IOError, OSError) as exc:
            raise RunnerError("missing", "the MAGIC bridge (%s) stopped: %s"
                              % (" ".join(self.command), exc))

    def _next(self, timeout, cancelled=None):
        """The bridge's next message; polls `cancelled` while waiting."""
        waited = 0.0
        while True:
            try:
                msg = self.inbox.get(timeout=0.1)
            except queue.Empty:
                waited += 0.1
                if cancelled is not None and cancelled():
                    return "cancel"
                if timeout is not None and waited > timeout:
                    raise RunnerError("unreachable", "the MAGIC bridge did not answer")
                continue
            if msg is None:
                code = self.proc.poll()
                raise RunnerError("missing", "the MAGIC bridge (%s) exited (status %s): check "
                                  "that this Python 3 has pyzmq, or run magic-installer again"
                                  % (" ".join(self.command), code))
            return msg

    @staticmethod
    def _check(header):
        if not header.get("ok"):
            raise RunnerError(header.get("kind") or "failed",
                              header.get("message") or "the MAGIC bridge reported an error")

    def handshake(self, address, timeout_s):
        self._send({"op": "handshake", "address": address, "timeout_s": timeout_s,
                    "curve": self.curve})
        header, _ = self._next(timeout_s + 30.0)
        self._check(header)
        return header["info"]

    def submit(self, address, request, on_event, cancelled, timeout_s):
        w, h = request["width"], request["height"]
        # The mode's frames in the protocol's order (a request holds only its mode's frames).
        frames = [request["image"]] + [request[name] for name in MODE_FRAMES
                                       if request.get(name) is not None]
        if request.get("init") is not None:
            frames.append(request["init"])
        self._send({"op": "submit", "address": address, "params": request["params"],
                    "width": w, "height": h, "timeout_s": timeout_s, "curve": self.curve},
                   frames)
        cancel_sent = False
        while True:
            msg = self._next(None, None if cancel_sent else cancelled)
            if msg == "cancel":
                self._send({"op": "cancel"})
                cancel_sent = True
                continue
            header, frames = msg
            if "event" in header:
                on_event(header["event"], header)
                continue
            self._check(header)
            images = [(data, size[0], size[1]) for data, size in zip(frames, header["sizes"])]
            return images, list(header.get("seeds") or []), list(header.get("notes") or [])

    def close(self):
        if self.proc is None:
            return
        try:
            write_message(self.proc.stdin, {"op": "quit"})
            self.proc.stdin.close()
        except (IOError, OSError, ValueError):
            pass
        try:
            self.proc.wait()
        except OSError:
            pass
        self.proc = None
