# ruff: noqa: UP004, UP031  (Python 2.7 compatible: GIMP 2.10)
"""One plug-in run, independent of the GIMP version: layers -> masks -> job -> result layers.

Python 2.7 + 3 common subset, standard library only. GIMP is reached through a `host`
(gimp3_host.Gimp3Host or the GIMP 2.10 host in magic_gimp2.py), the server through a `runner`
(gimp3_host.DirectRunner, or bridge_client.BridgeRunner for GIMP 2.10). Both are duck-typed:

host:   layer_geometry(layer) -> (width, height, x, y); layer_name(layer); same_layer(a, b)
        read_rgba(layer) -> bytes; read_luma_alpha(layer) -> (luma, alpha)
        read_selection(image, x, y, w, h) -> bytes or None when nothing is selected
        progress_start(text); progress_update(fraction, text); progress_end(); cancel_requested()
        wants_preview (bool); show_preview(image, base, rgb, w, h); clear_preview(image)
        insert_results(image, base, group_name, results)  # results: list of ResultLayer,
                                                          # one undo step, above `base`
runner: handshake(address, timeout_s) -> {"max_pixels": int, "presets": [...]}
        submit(address, request, on_event, cancelled, timeout_s) -> (images, seeds)
            request: dict(width, height, image (RGBA), source_mask, guide_mask, params,
                          init (RGBA rough composite, alpha 0 = the image's pixel) or None)
            images: list of (rgb bytes, width, height); on_event(kind, info dict), where
            info["previews"] may hold downscaled (rgb bytes, width, height) frames
        both raise RunnerError(kind, message), kind in RUNNER_ERROR_KINDS
"""

import time

from gimp_plugin import masks as M
from gimp_plugin import procedures, settings

RUNNER_ERROR_KINDS = ("unreachable", "mismatch", "failed", "cancelled", "timeout", "missing",
                      "refused")
HARD_MAX_SIDE = 65535  # the protocol's frame limit
STARTUP_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 3.0


class UserError(Exception):
    """Something the artist can fix; str() is the one-line message shown in GIMP.
    cancelled=True when the artist stopped the job (GIMP's CANCEL status, not an error)."""

    def __init__(self, message, cancelled=False):
        Exception.__init__(self, message)
        self.message = message
        self.cancelled = cancelled


class RunnerError(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message


class ResultLayer(object):
    def __init__(self, name, width, height, x, y, rgba):
        self.name = name
        self.width = width
        self.height = height
        self.x = x
        self.y = y
        self.rgba = rgba


class Job(object):
    """Everything computed from the image before talking to the server."""

    def __init__(self, mode, width, height, x, y, image_rgba, source, guide, edit_box, edit_alpha,
                 init_rgba=None):
        self.mode = mode
        self.width = width
        self.height = height
        self.x = x
        self.y = y
        self.image_rgba = image_rgba
        self.source = source
        self.guide = guide
        self.edit_box = edit_box  # (x0, y0, x1, y1) in the base layer's frame
        self.edit_alpha = edit_alpha  # alpha of the result layers inside edit_box
        self.init_rgba = init_rgba  # the moved layer placed in the base frame (seed), or None


def blend_margin(width, height):
    return max(4, (max(width, height) + 31) // 32)


def _layer_mask(host, layer, base_geometry, alpha_only=False):
    w, h, bx, by = base_geometry
    lw, lh, lx, ly = host.layer_geometry(layer)
    luma, alpha = host.read_luma_alpha(layer)
    mask = M.threshold(alpha) if alpha_only else M.object_mask(luma, alpha)
    placed = M.place(mask, lw, lh, lx - bx, ly - by, w, h)
    if M.is_empty(placed):
        how = ("it has no opaque pixels over the active layer" if alpha_only else
               "it has no white or opaque pixels over the active layer")
        raise UserError("Layer '%s' marks nothing: %s; paint the object or move the layer over "
                        "it." % (host.layer_name(layer), how))
    return placed


def _source_mask(host, args, base_geometry, selection):
    layer = args.get("source-mask")
    if layer is not None:
        return _layer_mask(host, layer, base_geometry)
    if selection is None or M.is_empty(selection):
        raise UserError("The source mask is empty: select the object (or pick a source-mask layer "
                        "that marks it in white or opaque pixels).")
    return selection


def collect(host, image, base, mode, args):
    """Read the layers and build the masks for `mode`; raises UserError for anything wrong."""
    if base is None:
        raise UserError("Select one layer (the photo) to work on.")
    geometry = host.layer_geometry(base)
    w, h, bx, by = geometry
    if w > HARD_MAX_SIDE or h > HARD_MAX_SIDE:
        raise UserError("The image is too large (%dx%d); the largest side allowed is %d pixels: "
                        "scale it down or crop it first." % (w, h, HARD_MAX_SIDE))
    for name in ("source-mask", "guide-mask", "moved-layer"):
        layer = args.get(name)
        if layer is not None and host.same_layer(layer, base):
            raise UserError("The %s layer is the active layer itself: pick the mask layer there and "
                            "make the photo the active layer." % name)
    selection = host.read_selection(image, bx, by, w, h)

    init = None
    if mode == "remove" and "guide-mask" not in args:  # the remove procedure
        if selection is None or M.is_empty(selection):
            raise UserError("Select the object to remove first.")
        if args.get("source-mask") is None:
            # The selected object is the only one: the guide is empty (nothing stays).
            source, guide = selection, bytearray(w * h)
        else:
            # The layer marks every object; the guide keeps those outside the selection
            # (none, when the layer marks only the selected one).
            source = _layer_mask(host, args["source-mask"], geometry)
            guide = M.subtract(source, selection)
    elif "moved-layer" in args:
        # Move / copy object: the moved layer's alpha is the new place.
        moved = args.get("moved-layer")
        if moved is None:
            raise UserError("Pick the moved layer: copy the object to a new layer, move it, then "
                            "choose that layer as moved-layer.")
        source = _source_mask(host, args, geometry, selection)
        placed = _layer_mask(host, moved, geometry, alpha_only=True)
        guide = placed if mode == "move" else M.union(source, placed)
        if args.get("seed-from-layer", True):
            init = _placed_rgba(host, moved, geometry)
    else:
        # Mask-guided synthesis, whatever the mode: the guide-mask layer is the new place and
        # shape (mode only tells the server how to weigh its terms); remove may go without.
        source = _source_mask(host, args, geometry, selection)
        if args.get("guide-mask") is not None:
            guide = _layer_mask(host, args["guide-mask"], geometry)
        elif mode == "remove":
            guide = bytearray(w * h)
        else:
            raise UserError("Pick a guide-mask layer: it marks where and in what shape the object "
                            "should be.")
    for label, m in (("source", source), ("guide", guide)):
        if M.is_full(m):
            raise UserError("The %s mask covers the whole layer: it must mark one object, not "
                            "everything." % label)

    if args.get("region", procedures.REGIONS[0]) == "whole-image":
        box, alpha = (0, 0, w, h), bytearray(b"\xff") * (w * h)
    else:
        area = M.dilate(M.union(source, guide), w, h, blend_margin(w, h))
        box = M.bbox(area, w, h)
        alpha = M.crop(area, w, h, box)
    return Job(mode, w, h, bx, by, bytearray(host.read_rgba(base)), source, guide, box, alpha,
               init)


def _placed_rgba(host, layer, base_geometry):
    """The layer's RGBA pixels in the base layer's frame, transparent where it does not reach:
    the rough composite the server lays over the photo (the moved object where it should go)."""
    w, h, bx, by = base_geometry
    lw, lh, lx, ly = host.layer_geometry(layer)
    return M.place(host.read_rgba(layer), lw, lh, lx - bx, ly - by, w, h, channels=4)


def job_params(job, args, preview=False):
    params = {"mode": job.mode, "samples": int(args["samples"]), "preset": str(args["preset"]),
              "seed": int(args["seed"])}
    if preview:
        params["preview"] = True
    if args.get("region", procedures.REGIONS[0]) == "whole-image":
        params["composite"] = False  # a whole new picture, not the edit region pasted back
    if int(args.get("iterations") or 0) > 0:
        params["iterations"] = int(args["iterations"])
    if int(args.get("resolution") or 0) > 0:
        params["resolution"] = int(args["resolution"])
    return params


def unreachable_message(address):
    return ("The MAGIC server is not running at %s. Start it in a terminal with: magic-server "
            "--bind %s (or run magic-installer to let the plug-in start it)." % (address, address))


def connect(host, runner, address, config):
    """Handshake; start the server first when it is down and the installer said how."""
    try:
        return runner.handshake(address, PROBE_TIMEOUT_S)
    except RunnerError as exc:
        if exc.kind != "unreachable":
            raise UserError(runner_message(exc, address))
    command = config.get("server_command")
    if not command:
        raise UserError(unreachable_message(address))
    host.progress_update(0.0, "Starting the MAGIC server...")
    log = settings.log_path()
    try:
        proc = settings.start_server(command, log)
    except (OSError, ValueError) as exc:
        raise UserError("Could not start the MAGIC server with `%s`: %s. Fix server_command in "
                        "magic_gimp.json or run magic-installer again." % (" ".join(command), exc))
    deadline = time.time() + STARTUP_TIMEOUT_S
    while True:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise UserError("The MAGIC server stopped right after starting (exit code %s): %s "
                            "(log: %s)" % (proc.returncode, settings.log_tail(log), log))
        try:
            info = runner.handshake(address, PROBE_TIMEOUT_S)
            info["started_pid"] = proc.pid
            return info
        except RunnerError as exc:
            if exc.kind != "unreachable":
                raise UserError(runner_message(exc, address))
        if host.cancel_requested():
            raise UserError("Cancelled while the MAGIC server was starting.", cancelled=True)
        if time.time() > deadline:
            raise UserError("The MAGIC server started with `%s` did not answer at %s within %d s "
                            "(log: %s)." % (" ".join(command), address, STARTUP_TIMEOUT_S, log))


def runner_message(exc, address):
    if exc.kind == "unreachable":
        return unreachable_message(address)
    if exc.kind == "mismatch":
        return "The MAGIC server and this plug-in do not match: %s" % exc.message
    if exc.kind == "timeout":
        return ("The job did not finish in time and was cancelled on the server: raise the timeout "
                "or pick a faster preset. (%s)" % exc.message)
    if exc.kind == "cancelled":
        return "Cancelled."
    if exc.kind == "missing":
        return exc.message
    if exc.kind == "refused":
        return ("The MAGIC server at %s refused this plug-in's CurveZMQ key: %s" % (address,
                                                                                   exc.message))
    return "The MAGIC server could not do this job: %s" % exc.message


class JobProgress(object):
    """One progress bar for the whole job, whatever its stages.

    The server counts iterations per stage: "mask-net" (learning the object) has its own count,
    then "synthesis" and "refine" share one count. The bar gives the first stage MASK_SHARE and
    the rest to the synthesis; it never goes back. The time left is measured here, from how fast
    the bar moved over the last WINDOW_S seconds (the refine stage is slower per iteration, and a
    whole-run average would hide that), the server's own estimate until then; during the first
    stage only that stage's time is known, and the text says so."""

    MASK_SHARE = 0.1
    WINDOW_S = 20.0

    def __init__(self, mode, clock=time.time):
        self.title = "MAGIC %s" % mode
        self.clock = clock
        self.fraction = 0.0
        self.base = None  # bar position where the synthesis count starts
        self.samples = []  # (time, fraction) since the synthesis count started

    def event(self, kind, info):
        """(fraction or None to keep the bar, text) for one server event."""
        if kind == "accepted":
            ahead = info.get("position") or 0
            return None, self.title + (": waiting, %d job(s) ahead" % ahead if ahead
                                       else ": started")
        if kind == "reconnecting":
            return None, self.title + ": server went silent, reconnecting..."
        if kind != "progress":
            return None, self.title
        stage = info.get("stage") or "synthesis"
        it, total = int(info.get("iteration") or 0), int(info.get("total") or 0)
        done = min(1.0, float(it) / total) if total else 0.0
        parts = [self.title + ":", procedures.stage_label(stage)]
        if total:
            parts.append("%d/%d" % (it, total))
        if stage == "mask-net" and self.base is None:
            self.fraction = max(self.fraction, self.MASK_SHARE * done)
            eta = procedures.format_eta(info.get("eta_s"))
            if eta:
                parts.append("- this step: " + eta)
            return self.fraction, " ".join(parts)
        if self.base is None:
            self.base = self.fraction
        f = self.base + (1.0 - self.base) * done
        if f < self.fraction:  # a count that started again: continue from here
            self.base = self.fraction
            f = self.fraction
        self.fraction = f
        now = self.clock()
        self.samples.append((now, f))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW_S:
            self.samples.pop(0)
        # until the bar has moved for a while, the server's estimate (the same count)
        eta = self.eta() or procedures.format_eta(info.get("eta_s"))
        if eta:
            parts.append("- " + eta)
        return self.fraction, " ".join(parts)

    def eta(self):
        if len(self.samples) < 2:
            return ""
        (t0, f0), (t1, f1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 1.0 or f1 <= f0:
            return ""
        return procedures.format_eta((1.0 - f1) * (t1 - t0) / (f1 - f0))


def _progress_text(mode, kind, info):
    """The text for one event on its own (without the bar's history)."""
    return JobProgress(mode).event(kind, info)[1]


def build_results(job, images, seeds, first_seed):
    x0, y0, x1, y1 = job.edit_box
    out = []
    for i, (rgb, w, h) in enumerate(images):
        if (w, h) != (job.width, job.height):
            raise UserError("The server sent a %dx%d result for a %dx%d image; update the server."
                            % (w, h, job.width, job.height))
        seed = seeds[i] if i < len(seeds) else first_seed + i
        cropped = M.crop(rgb, w, h, job.edit_box, channels=3)
        rgba = M.rgb_to_rgba(cropped, job.edit_alpha)
        out.append(ResultLayer(procedures.result_layer_name(job.mode, seed), x1 - x0, y1 - y0,
                               job.x + x0, job.y + y0, rgba))
    return out


def run(host, runner, image, base, mode, args, config):
    """The whole run. Returns the list of ResultLayer inserted; raises UserError."""
    job = collect(host, image, base, mode, args)
    try:
        address = settings.resolve_address(args.get("server-address"), config)
    except ValueError as exc:
        raise UserError(str(exc))
    # The first text stays as the cancel button's tooltip in GIMP 3: name the job, not a stage.
    host.progress_start("MAGIC %s" % mode)
    try:
        host.progress_update(0.0, "MAGIC %s: connecting to %s" % (mode, address))
        info = connect(host, runner, address, config)
        max_pixels = int(info.get("max_pixels") or 0)
        if max_pixels and job.width * job.height > max_pixels:
            raise UserError("The image is too large: %dx%d = %d pixels, the server accepts at most "
                            "%d. Scale the layer down or crop it first."
                            % (job.width, job.height, job.width * job.height, max_pixels))
        presets = info.get("presets") or []
        if presets and args["preset"] not in presets:
            raise UserError("The server does not know the preset '%s'; it offers: %s."
                            % (args["preset"], ", ".join(presets)))
        preview = bool(getattr(host, "wants_preview", False))
        params = job_params(job, args, preview)
        request = {"width": job.width, "height": job.height, "image": job.image_rgba,
                   "source_mask": job.source, "guide_mask": job.guide, "params": params,
                   "init": job.init_rgba}

        bar = JobProgress(mode)

        def on_event(kind, info):
            fraction, text = bar.event(kind, info)
            host.progress_update(fraction, text)
            frames = info.get("previews") or []
            if preview and frames:
                rgb, w, h = frames[0]
                host.show_preview(image, base, rgb, w, h)

        timeout = int(args.get("timeout") or 0) or None
        host.progress_update(0.0, "MAGIC %s: sending %dx%d image" % (mode, job.width, job.height))
        try:
            images, seeds = runner.submit(address, request, on_event, host.cancel_requested,
                                          timeout)
        except RunnerError as exc:
            raise UserError(runner_message(exc, address), cancelled=exc.kind == "cancelled")
        finally:
            if preview:
                host.clear_preview(image)
        if not images:
            raise UserError("The MAGIC server returned no images.")
        results = build_results(job, images, seeds, params["seed"])
        host.progress_update(1.0, "MAGIC %s: adding %d layer(s)" % (mode, len(results)))
        host.insert_results(image, base, procedures.group_name(mode), results)
        return results
    finally:
        host.progress_end()
