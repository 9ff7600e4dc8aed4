"""GIMP 3 side of a run: pixels in and out of layers through GEGL buffers, progress, undo, and
the in-process client. Imports only the standard library, gi and (lazily) magic_protocol.client.
"""

from __future__ import annotations

import os
import select
import sys

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp

from gimp_plugin.masks import rgb_to_rgba
from gimp_plugin.workflow import RunnerError

RGBA = "R'G'B'A u8"
LUMA_ALPHA = "Y'A u8"
SELECTION = "Y u8"


def _offsets(drawable) -> tuple[int, int]:
    r = drawable.get_offsets()
    return (r[1], r[2]) if len(r) == 3 else (r[0], r[1])


def _read(drawable, x: int, y: int, w: int, h: int, fmt: str, abyss) -> bytes:
    data = drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, abyss)
    return bytes(data)


class Gimp3Host:
    """workflow's host for GIMP 3 (see gimp_plugin.workflow for the contract).
    preview=True: show the server's preview frames in a temporary layer while the job runs."""

    PREVIEW_NAME = "MAGIC preview (temporary)"

    def __init__(self, preview: bool = False) -> None:
        self._gimp_fd = gimp_read_fd(sys.argv)
        self._last_text = None
        self.wants_preview = preview
        self._preview = None
        self.previews_shown = 0

    def layer_geometry(self, layer):
        x, y = _offsets(layer)
        return layer.get_width(), layer.get_height(), x, y

    def layer_name(self, layer) -> str:
        return layer.get_name()

    def same_layer(self, a, b) -> bool:
        return a.get_id() == b.get_id()

    def read_rgba(self, layer) -> bytes:
        return _read(layer, 0, 0, layer.get_width(), layer.get_height(), RGBA,
                     Gegl.AbyssPolicy.CLAMP)

    def read_luma_alpha(self, layer):
        data = _read(layer, 0, 0, layer.get_width(), layer.get_height(), LUMA_ALPHA,
                     Gegl.AbyssPolicy.CLAMP)
        return data[0::2], data[1::2]

    def read_selection(self, image, x, y, w, h):
        if Gimp.Selection.is_empty(image):
            return None
        return _read(image.get_selection(), x, y, w, h, SELECTION, Gegl.AbyssPolicy.NONE)

    def progress_start(self, text: str) -> None:
        Gimp.progress_init(text)

    def progress_update(self, fraction, text) -> None:
        if text and text != self._last_text:
            Gimp.progress_set_text(text)
            self._last_text = text
        if fraction is None:
            Gimp.progress_pulse()
        else:
            Gimp.progress_update(fraction)

    def progress_end(self) -> None:
        Gimp.progress_end()

    def cancel_requested(self) -> bool:
        return gimp_hung_up(self._gimp_fd)

    def show_preview(self, image, base, rgb, w, h) -> None:
        """Replace the temporary preview layer. Undo is frozen while it exists, so the preview
        never shows in the undo history (the image is back as it was when it is removed)."""
        if self._preview is None:
            image.undo_freeze()
        else:
            image.remove_layer(self._preview)
        layer = Gimp.Layer.new(image, self.PREVIEW_NAME, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0,
                               Gimp.LayerMode.NORMAL)
        self._preview = layer
        image.insert_layer(layer, base.get_parent(), image.get_item_position(base))
        buf = layer.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, w, h), RGBA, bytes(rgb_to_rgba(rgb, b"\xff" * (w * h))))
        buf.flush()  # the pixels must reach GIMP's core before it scales the layer
        bw, bh, bx, by = self.layer_geometry(base)
        layer.scale(bw, bh, False)
        layer.set_offsets(bx, by)
        Gimp.displays_flush()
        self.previews_shown += 1

    def clear_preview(self, image) -> None:
        if self._preview is not None:
            image.remove_layer(self._preview)
            self._preview = None
            image.undo_thaw()
            Gimp.displays_flush()
        if self.previews_shown and os.environ.get("MAGIC_GIMP_PREVIEW") == "1":
            print(f"MAGIC preview frames shown: {self.previews_shown}", file=sys.stderr)

    def insert_results(self, image, base, group_name, results) -> None:
        image.undo_group_start()
        try:
            parent = base.get_parent()
            group = Gimp.GroupLayer.new(image, group_name)
            if not image.insert_layer(group, parent, image.get_item_position(base)):
                raise RuntimeError("GIMP refused to add the result layer group")
            for i, r in enumerate(results):
                layer = Gimp.Layer.new(image, r.name, r.width, r.height,
                                       Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
                if not image.insert_layer(layer, group, i):
                    raise RuntimeError(f"GIMP refused to add the result layer {r.name!r}")
                layer.set_offsets(r.x, r.y)
                buf = layer.get_buffer()
                buf.set(Gegl.Rectangle.new(0, 0, r.width, r.height), RGBA, bytes(r.rgba))
                buf.flush()
                layer.update(0, 0, r.width, r.height)
        finally:
            image.undo_group_end()
        Gimp.displays_flush()


def gimp_read_fd(argv) -> int | None:
    """The pipe GIMP talks to us on: `-gimp PROTOCOL READ_FD WRITE_FD ...` (GIMP 3)."""
    try:
        i = argv.index("-gimp")
        return int(argv[i + 2])
    except (ValueError, IndexError):
        return None


def gimp_hung_up(fd: int | None) -> bool:
    """True once GIMP closed our pipe: the artist cancelled from the progress bar (GIMP then
    ends the plug-in; the server also drops jobs whose client stops sending heartbeats)."""
    if fd is None or not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLHUP | select.POLLERR)
    try:
        events = poller.poll(0)
    except OSError:
        return True
    return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events)


PYZMQ_HINT = ("The MAGIC plug-in needs pyzmq in GIMP's Python ({python}): install it with "
              "`{python} -m pip install --user pyzmq` (Debian/Ubuntu: `sudo apt install "
              "python3-zmq`; Windows GIMP: run `python.exe -m pip install pyzmq` in GIMP's bin "
              "folder), then restart GIMP.")


def load_client():
    """magic_protocol.client, or RunnerError('missing') with the exact fix when pyzmq is absent."""
    try:
        import zmq  # noqa: F401
    except ImportError:
        raise RunnerError("missing", PYZMQ_HINT.format(python=sys.executable or "python3"))
    from magic_protocol import client

    return client


class DirectRunner:
    """workflow's runner for GIMP 3: magic_protocol.client in this process."""

    def __init__(self, client_module=None) -> None:
        self._c = client_module

    @property
    def c(self):
        if self._c is None:
            self._c = load_client()
        return self._c

    def _translate(self, exc):
        c = self.c
        for cls, kind in ((c.ServerUnreachable, "unreachable"), (c.ProtocolMismatch, "mismatch"),
                          (c.JobCancelled, "cancelled"), (c.Timeout, "timeout"),
                          (c.JobFailed, "failed")):
            if isinstance(exc, cls):
                return RunnerError(kind, str(exc))
        return RunnerError("failed", str(exc))

    def handshake(self, address, timeout_s):
        c = self.c
        try:
            with c.MagicClient(address, timeout_s=timeout_s, retries=0) as client:
                info = client.handshake()
        except c.MagicError as exc:
            raise self._translate(exc) from None
        return {"max_pixels": info.limits.max_pixels, "presets": list(info.presets),
                "device": info.device}

    def submit(self, address, request, on_event, cancelled, timeout_s):
        c = self.c
        job = c.JobRequest.from_params(
            request["width"], request["height"], request["image"], request["source_mask"],
            request["guide_mask"], request["params"], init_image=request.get("init"))

        def forward(ev):
            previews = [(bytes(p.data), p.width, p.height) for p in ev.previews
                        if p.channels == 3]
            on_event(ev.kind, {"position": ev.position, "iteration": ev.iteration,
                               "total": ev.total, "eta_s": ev.eta_s, "stage": ev.stage,
                               "previews": previews})

        try:
            # A busy server still answers heartbeats; 20 s of silence means it is gone.
            with c.MagicClient(address, timeout_s=20.0, retries=1) as client:
                result = client.submit(job, forward, cancelled, job_timeout_s=timeout_s)
        except c.MagicError as exc:
            raise self._translate(exc) from None
        images = [(bytes(im.data), im.width, im.height) for im in result.images
                  if im.channels == 3]
        return images, list(result.seeds)


