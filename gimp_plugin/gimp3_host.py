"""GIMP 3 side of a run: pixels in and out of layers through GEGL buffers, progress, undo, and
the in-process client. Imports only the standard library, gi and (lazily) magic_protocol.client.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp

from gimp_plugin.memory import MADE_PARASITE
from gimp_plugin.workflow import RunnerError, gimp_hung_up, result_stack

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

    preview=True: show the server's preview frames while the job runs, in the plug-in's own
    window (PreviewWindow), never as a layer: GIMP ends a cancelled plug-in with SIGKILL 10 ms
    after asking it to quit, so anything a preview left in the image (a layer, frozen undo)
    would stay there. A window of the plug-in's process vanishes with it."""

    def __init__(self, preview: bool = False, display: bool | None = None) -> None:
        self._gimp_fd = gimp_read_fd(sys.argv)
        self._last_text = None
        self.wants_preview = preview
        self._display = has_display() if display is None else display
        self._window = None
        self.previews_shown = 0
        self.previews_received = 0
        self._echo = os.environ.get("MAGIC_GIMP_PREVIEW") == "1"  # tests: log the texts
        self.interactive = preview  # someone watches: a long run is asked about first

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
        # The first text also becomes the tooltip of the status bar's cancel button (GIMP keeps
        # it for the whole run): say what the button does, not the first stage.
        Gimp.progress_init(text)
        self._last_text = text

    def progress_update(self, fraction, text) -> None:
        if text and text != self._last_text:
            Gimp.progress_set_text(text)
            self._last_text = text
            if self._echo:
                print("MAGIC progress: " + text, file=sys.stderr, flush=True)
        if fraction is not None:  # None: keep the bar where it is (one bar for the whole job)
            Gimp.progress_update(fraction)
        if self._window is not None:
            self._window.set_text(text or "")

    def progress_end(self) -> None:
        Gimp.progress_end()

    def cancel_requested(self) -> bool:
        if self._window is not None:
            self._window.pump()
            if self._window.cancelled:
                return True
        return gimp_hung_up(self._gimp_fd)

    def show_preview(self, image, base, rgb, w, h) -> None:
        """Show one preview frame (RGB, the server's region being synthesized) in the preview
        window; nothing in the image changes."""
        self.previews_received += 1
        if not self._display:
            return
        if self._window is None:
            self._window = PreviewWindow()
        self._window.show_frame(rgb, w, h)
        self.previews_shown += 1

    def clear_preview(self, image) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
        if self.previews_received and os.environ.get("MAGIC_GIMP_PREVIEW") == "1":
            print(f"MAGIC preview frames received: {self.previews_received}, shown: "
                  f"{self.previews_shown}", file=sys.stderr)

    def insert_results(self, image, base, group_name, results, hide=()) -> None:
        """The result group on top of the photo's earlier MAGIC results (directly above the
        photo), in one undo step, with the earlier result groups and the run's visible input
        layers (`hide`: the moved layer...) hidden, so that the canvas shows the new result;
        Undo brings all back. The photo is then the selected layer again (GIMP selects each
        inserted layer), so that Filters > Repeat and Re-show run on the photo."""
        image.undo_group_start()
        try:
            parent = base.get_parent()
            siblings = list(parent.get_children() if parent is not None else image.get_layers())
            ids = [s.get_id() for s in siblings]
            position, earlier = result_stack(siblings, ids.index(base.get_id()), made_by_magic,
                                             lambda s: s.is_group() and made_by_magic(s))
            for layer in list(earlier) + list(hide):
                if layer.get_visible():
                    layer.set_visible(False)
            group = Gimp.GroupLayer.new(image, group_name)
            if not image.insert_layer(group, parent, position):
                raise RuntimeError("GIMP refused to add the result layer group")
            mark_made(group)
            for i, r in enumerate(results):
                _insert_layer(image, r, group, i)
        finally:
            image.undo_group_end()
        image.set_selected_layers([base])
        Gimp.displays_flush()

    def confirm(self, text: str) -> bool:
        """Ask before a long run (a dialog of the plug-in's own); True without a display."""
        if not self._display or not self.interactive:
            return True
        return ask(text)

    def insert_label_maps(self, image, base, layers) -> None:
        """The label layers directly above the photo (the first on top), in one undo step; the
        top one (the copy to paint on) becomes the selected layer."""
        image.undo_group_start()
        try:
            parent, position = base.get_parent(), image.get_item_position(base)
            for r in reversed(layers):  # each one at the photo's old place pushes the rest down
                _insert_layer(image, r, parent, position)
        finally:
            image.undo_group_end()
        image.set_selected_layers([layers[0].layer])
        Gimp.displays_flush()

    def tell(self, text: str) -> None:
        Gimp.message(text)


def _insert_layer(image, r, parent, position) -> None:
    """One workflow.ResultLayer as a new RGBA layer; r.layer is then that layer."""
    layer = Gimp.Layer.new(image, r.name, r.width, r.height, Gimp.ImageType.RGBA_IMAGE,
                           r.opacity, Gimp.LayerMode.NORMAL)
    if not image.insert_layer(layer, parent, position):
        raise RuntimeError(f"GIMP refused to add the layer {r.name!r}")
    mark_made(layer)
    layer.set_offsets(r.x, r.y)
    if not r.visible:
        layer.set_visible(False)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, r.width, r.height), RGBA, bytes(r.rgba))
    buf.flush()
    layer.update(0, 0, r.width, r.height)
    r.layer = layer


def made_by_magic(item) -> bool:
    """Whether MAGIC added this layer or group (see mark_made)."""
    try:
        return item.get_parasite(MADE_PARASITE) is not None
    except Exception:  # noqa: BLE001 - another GIMP: the artist's layer
        return False


def keep_sample(image, layer) -> str:
    """Keep this sample: `layer` (a MAGIC result inside its run's group) stays, shown, with its
    group; the group's other samples are deleted, in one undo step. Returns what was done, for
    the status bar. Raises ValueError with what to select when `layer` is no such sample."""
    group = layer.get_parent()
    if layer.is_group() or not made_by_magic(layer) or group is None \
            or not made_by_magic(group):
        raise ValueError("Select one MAGIC result layer (a sample inside a 'MAGIC ...' group) "
                         "in the Layers dock, then run Keep this sample.")
    others = [c for c in group.get_children() if c.get_id() != layer.get_id()]
    image.undo_group_start()
    try:
        for other in others:
            image.remove_layer(other)
        if not layer.get_visible():
            layer.set_visible(True)
        if not group.get_visible():
            group.set_visible(True)
    finally:
        image.undo_group_end()
    image.set_selected_layers([layer])
    Gimp.displays_flush()
    return (f"Kept {layer.get_name()}; {len(others)} other sample(s) deleted (Edit > Undo "
            "brings them back).")


def ask(text: str) -> bool:
    """A modal Yes/No question of the plug-in's own ("MAGIC - long run")."""
    gi.require_version("Gtk", "3.0")
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init("magic-gimp")
    dialog = Gtk.MessageDialog(message_type=Gtk.MessageType.QUESTION,
                               buttons=Gtk.ButtonsType.NONE, text=text)
    dialog.set_title("MAGIC - long run")
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button("_Start", Gtk.ResponseType.OK)
    dialog.set_default_response(Gtk.ResponseType.CANCEL)
    with contextlib.suppress(Exception):
        GimpUi.window_set_transient(dialog)
    answer = dialog.run()
    dialog.destroy()
    while Gtk.events_pending():
        Gtk.main_iteration_do(False)
    return answer == Gtk.ResponseType.OK


def mark_made(layer) -> None:
    """Mark a layer MAGIC added (a parasite neither persistent nor undoable: no undo step), so
    that a later run selected on it goes to the photo (magic_gimp3.rerun_photo)."""
    with contextlib.suppress(Exception):  # only a convenience: never stop the insert
        layer.attach_parasite(Gimp.Parasite.new(MADE_PARASITE, 0, b"1"))


def has_display() -> bool:
    """Whether a preview window can open (GimpUi/Gtk abort without a display on X11/Wayland)."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class PreviewWindow:
    """A small window of the plug-in's own: the latest preview frame, the progress text and a
    Cancel button (a second way to cancel, next to the status bar's). It opens in the screen's
    top-right corner, below the menu bar and away from the toolbox (GIMP's docks on the right
    are not needed while a job runs), and shows every frame at PREVIEW_SIDE px on its long
    side, however small the server's frame (a removal's region can be 60x70 px)."""

    PREVIEW_SIDE = 288  # the picture's long side on screen
    MARGIN = (16, 80)  # from the right edge; from the top (title and menu bar)

    def __init__(self) -> None:
        gi.require_version("Gtk", "3.0")
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi, Gtk

        GimpUi.init("magic-gimp")
        self.Gtk = Gtk
        self.cancelled = False
        win = Gtk.Window(title="MAGIC preview")
        win.set_resizable(False)
        win.set_keep_above(True)
        win.set_default_size(self.PREVIEW_SIDE + 16, self.PREVIEW_SIDE + 80)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        box.set_border_width(8)
        self.image = Gtk.Image()
        self.label = Gtk.Label(label="")
        self.label.set_max_width_chars(48)
        self.label.set_width_chars(48)  # a fixed width: the window does not grow with the text
        self.label.set_ellipsize(3)  # Pango.EllipsizeMode.END
        button = Gtk.Button(label="Cancel")
        button.connect("clicked", self._cancel)
        win.connect("delete-event", self._cancel)
        box.pack_start(self.image, True, True, 0)
        box.pack_start(self.label, False, False, 0)
        box.pack_start(button, False, False, 0)
        win.add(box)
        with contextlib.suppress(Exception):
            GimpUi.window_set_transient(win)
        win.show_all()
        self.window = win
        self.place()
        self.pump()

    def place(self) -> None:
        """The top-right corner of the monitor's work area (see the class)."""
        with contextlib.suppress(Exception):  # placement is a nicety: never stop a job for it
            from gi.repository import Gdk

            display = Gdk.Display.get_default()
            monitor = display.get_primary_monitor() or display.get_monitor(0)
            area = monitor.get_workarea()
            # its natural width: the picture or the progress text (ellipsized at a fixed
            # number of characters), whichever is wider; it does not grow after this
            w = max(self.window.get_preferred_size()[1].width, self.PREVIEW_SIDE + 16)
            self.window.move(area.x + area.width - w - self.MARGIN[0], area.y + self.MARGIN[1])

    def _cancel(self, *_args):
        self.cancelled = True
        self.label.set_text("Cancelling...")
        return True

    def show_frame(self, rgb, w: int, h: int) -> None:
        from gi.repository import GdkPixbuf, GLib

        pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(bytes(rgb)),
                                                 GdkPixbuf.Colorspace.RGB, False, 8, w, h, w * 3)
        scale = self.PREVIEW_SIDE / max(w, h)
        if scale != 1.0:
            pixbuf = pixbuf.scale_simple(max(1, round(w * scale)), max(1, round(h * scale)),
                                         GdkPixbuf.InterpType.BILINEAR)
        self.image.set_from_pixbuf(pixbuf)
        self.pump()

    def set_text(self, text: str) -> None:
        if not self.cancelled:
            self.label.set_text(text)

    def pump(self) -> None:
        Gtk = self.Gtk
        n = 0
        while Gtk.events_pending() and n < 200:
            Gtk.main_iteration_do(False)
            n += 1

    def close(self) -> None:
        self.window.destroy()
        self.pump()


def gimp_read_fd(argv) -> int | None:
    """The pipe GIMP talks to us on: `-gimp PROTOCOL READ_FD WRITE_FD ...` (GIMP 3)."""
    try:
        i = argv.index("-gimp")
        return int(argv[i + 2])
    except (ValueError, IndexError):
        return None


PYZMQ_HINT = ("The MAGIC plug-in needs pyzmq in GIMP's Python ({python}): install it with "
              "`{python} -m pip install --user pyzmq` (Debian/Ubuntu: `sudo apt install "
              "python3-zmq`; Windows GIMP: run `python.exe -m pip install pyzmq` in GIMP's bin "
              "folder), then restart GIMP.")


def vendor_tag() -> str:
    """This Python's folder under vendor/ (= installer.gimp_python.vendor_tag): cp313-linux_x86_64."""
    import sysconfig

    major, minor = sys.version_info[:2]
    return f"cp{major}{minor}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")


def load_client():
    """magic_protocol.client, or RunnerError('missing') with the exact fix when pyzmq is absent.
    GIMP's Python's own pyzmq comes first; the installer's vendored wheel (vendor/<tag>/, built
    for exactly this Python) is used only when there is none, so it never shadows a working one."""
    try:
        import zmq
    except ImportError:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        vendored = os.path.join(root, "vendor", vendor_tag())
        if not os.path.isdir(vendored):
            raise RunnerError("missing", PYZMQ_HINT.format(python=sys.executable or "python3"))
        sys.path.append(vendored)
        try:
            import zmq  # noqa: F401
        except ImportError as exc:
            raise RunnerError("missing", PYZMQ_HINT.format(python=sys.executable or "python3")
                              + f" (the vendored pyzmq in {vendored} failed: {exc})") from None
    from magic_protocol import client

    return client


class CancelGuard:
    """The cancel_guard process of one job (see gimp_plugin.cancel_guard)."""

    def __init__(self, address: str, curve: dict | None, cancel_key: str | None = None) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in sys.path if p and p != root])
        env.pop("PYTHONHOME", None)
        kwargs = {"start_new_session": True} if sys.platform != "win32" else {
            "creationflags": 0x00000200 | 0x08000000}  # new process group, no window
        self.proc = subprocess.Popen(
            [sys.executable or "python3", "-c",
             "import sys; from gimp_plugin import cancel_guard; sys.exit(cancel_guard.main())"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=root,
            close_fds=True, **kwargs)
        self._send({"address": address, "curve": curve, "cancel_key": cancel_key})

    def _send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def job(self, job_id: str) -> None:
        self._send({"job": job_id})

    def done(self) -> None:
        self._send({"done": True})
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()


def curve_arguments(options: dict) -> dict | None:
    """MagicClient's CurveZMQ keyword arguments from settings.curve_options()
    (magic_protocol.client.curve_keywords); RunnerError("failed") when a key cannot be read."""
    if not options:
        return None
    client = load_client()
    try:
        return client.curve_keywords(options)
    except client.MagicError as exc:
        raise RunnerError("failed", str(exc)) from None


class DirectRunner:
    """workflow's runner for GIMP 3: magic_protocol.client in this process.
    curve: settings.curve_options() (server key, client key pair) or None.
    guard=True: a CancelGuard per job cancels it if GIMP kills the plug-in."""

    def __init__(self, client_module=None, curve: dict | None = None,
                 guard: bool = False) -> None:
        self._c = client_module
        self._curve_options = curve or {}
        self._guard = guard

    @property
    def c(self):
        if self._c is None:
            self._c = load_client()
        return self._c

    def _keys(self) -> dict:
        return curve_arguments(self._curve_options) or {}

    def _translate(self, exc):
        return RunnerError(self.c.error_kind(exc), str(exc))

    def handshake(self, address, timeout_s):
        c = self.c
        try:
            with c.MagicClient(address, timeout_s=timeout_s, retries=0, **self._keys()) as client:
                info = client.handshake()
        except c.MagicError as exc:
            raise self._translate(exc) from None
        estimates = info.raw.get("estimates")
        return {"max_pixels": info.limits.max_pixels, "presets": list(info.presets),
                "modes": list(info.modes), "device": info.device,
                "estimates": estimates if isinstance(estimates, dict) else {}}

    def submit(self, address, request, on_event, cancelled, timeout_s):
        c = self.c
        keys = self._keys()
        job = c.JobRequest.from_params(
            request["width"], request["height"], request["image"], request.get("source_mask"),
            request.get("guide_mask"), request["params"], init_image=request.get("init"),
            source_labels=request.get("source_labels"),
            target_labels=request.get("target_labels"))
        # The guard knows the job's cancel key before the job is sent: a kill while the image
        # is on its way (or before the server's answer is read) is cancelled too.
        cancel_key = c.new_cancel_key()
        guard = CancelGuard(address, keys or None, cancel_key) if self._guard else None

        def forward(ev):
            if ev.kind == "accepted" and guard is not None and ev.job_id:
                guard.job(ev.job_id)
            previews = [(bytes(p.data), p.width, p.height) for p in ev.previews
                        if p.channels == 3]
            on_event(ev.kind, {"position": ev.position, "iteration": ev.iteration,
                               "total": ev.total, "eta_s": ev.eta_s, "stage": ev.stage,
                               "elapsed_s": ev.elapsed_s, "previews": previews})

        try:
            # A busy server still answers heartbeats; 20 s of silence means it is gone.
            with c.MagicClient(address, timeout_s=20.0, retries=1, **keys) as client:
                result = client.submit(job, forward, cancelled, job_timeout_s=timeout_s,
                                       cancel_key=cancel_key)
        except c.MagicError as exc:
            raise self._translate(exc) from None
        finally:
            if guard is not None:
                guard.done()
        images = [(bytes(im.data), im.width, im.height) for im in result.images
                  if im.channels == 3]
        return images, list(result.seeds), list(result.notes)
