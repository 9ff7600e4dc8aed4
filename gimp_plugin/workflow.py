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
        insert_results(image, base, group_name, results, hide)
            # results: list of ResultLayer, as one group, in one undo step: on top of the
            # photo's earlier MAGIC results (directly above `base`, see result_stack), which
            # are hidden, as are the `hide` layers (the run's visible inputs, e.g. the moved
            # layer): the canvas shows the new result; Undo shows everything as before
        insert_label_maps(image, base, layers)  # ResultLayers directly above `base`, the first
                                                # on top and selected, one undo step
        tell(text)  # a message the artist reads after the run (what to do next)
        confirm(text) -> bool  # optional: ask before a long run (absent: go ahead)
        keep_sample(image, layer)  # Keep this sample (see keep_sample below)
        The insert methods set each ResultLayer's `layer` to the GIMP layer made from it.
runner: handshake(address, timeout_s) -> {"max_pixels": int, "presets": [...], "modes": [...],
                                          "device": str, "estimates": {...} (optional)}
        submit(address, request, on_event, cancelled, timeout_s) -> (images, seeds, notes)
            request: dict(width, height, image (RGBA), params, init (RGBA rough composite,
                          alpha 0 = the image's pixel) or None) plus the mode's frames:
                     source_mask, guide_mask (binary edits: 1 channel each), or
                     source_labels, target_labels (layout: RGB label maps), or none (label-map)
            images: list of (rgb bytes, width, height); notes: sentences for the artist;
            on_event(kind, info dict), where info["previews"] may hold downscaled
            (rgb bytes, width, height) frames
        both raise RunnerError(kind, message), kind in errors.RUNNER_ERROR_KINDS
"""

import time

from gimp_plugin import masks as M
from gimp_plugin import procedures, settings
from gimp_plugin.edit_request import LAYER_ARGS, collect
from gimp_plugin.errors import RunnerError, UserError

STARTUP_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 3.0
STARTUP_PROBE_S = 1.0  # one handshake try while a started server loads
STARTUP_SAY_EVERY_S = 5.0  # while a started server loads: what it is doing, this often
LONG_RUN_S = 300.0  # a run estimated longer than this asks before it starts


class ResultLayer(object):
    def __init__(self, name, width, height, x, y, rgba, opacity=100.0, visible=True):
        self.name = name
        self.width = width
        self.height = height
        self.x = x
        self.y = y
        self.rgba = rgba
        self.opacity = opacity
        self.visible = visible
        self.layer = None  # the GIMP layer, once inserted


def job_params(job, args, preview=False):
    if job.mode == procedures.LABEL_MAP:
        # samples and preset mean nothing to a label map; the protocol still wants them
        return {"mode": job.mode, "samples": 1, "preset": procedures.PRESETS[0],
                "seed": int(args["seed"]), "labels": int(args["labels"])}
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


def connect(host, runner, address, config, clock=time.time, sleep=time.sleep):
    """Handshake; start the server first when it is down and the installer said how. While a
    started server loads, the progress text says how long it has been and what the server
    last wrote, every STARTUP_SAY_EVERY_S; a server that stops is reported at once with its
    own reason (e.g. no classifier weights)."""
    try:
        return runner.handshake(address, PROBE_TIMEOUT_S)
    except RunnerError as exc:
        if exc.kind != "unreachable":
            raise UserError(runner_message(exc, address))
    command = config.get("server_command")
    if not command:
        raise UserError(unreachable_message(address))
    host.progress_update(0.0, "Starting the MAGIC server at %s..." % address)
    log = settings.log_path()
    offset = settings.log_size(log)
    try:
        proc = settings.start_server(command, log)
    except (OSError, ValueError) as exc:
        raise UserError("Could not start the MAGIC server with `%s`: %s. Fix server_command in "
                        "magic_gimp.json or run magic-installer again." % (" ".join(command), exc))
    started = said = clock()
    while True:
        sleep(0.3)
        if proc.poll() is not None:
            lines = settings.log_since(offset, log)
            reason = settings.server_said(lines)
            if reason:
                raise UserError("The MAGIC server could not start: %s. (Started with `%s`; log: "
                                "%s)" % (reason.rstrip("."), " ".join(command), log))
            raise UserError("The MAGIC server stopped right after starting (exit code %s): %s "
                            "(log: %s)" % (proc.returncode, " | ".join(lines[-3:]), log))
        try:
            info = runner.handshake(address, STARTUP_PROBE_S)
            info["started_pid"] = proc.pid
            return info
        except RunnerError as exc:
            if exc.kind != "unreachable":
                raise UserError(runner_message(exc, address))
        if host.cancel_requested():
            raise UserError("Cancelled while the MAGIC server was starting.", cancelled=True)
        now = clock()
        if now - started > STARTUP_TIMEOUT_S:
            raise UserError("The MAGIC server started with `%s` did not answer at %s within %d s "
                            "(log: %s)." % (" ".join(command), address, STARTUP_TIMEOUT_S, log))
        if now - said >= STARTUP_SAY_EVERY_S:
            said = now
            lines = settings.log_since(offset, log)
            host.progress_update(None, "Starting the MAGIC server: %d s so far, %s" % (
                now - started, ("it says: " + lines[-1][-120:]) if lines else
                "no output yet (log: %s)" % log))


def gimp_hung_up(fd):
    """True once GIMP closed our pipe `fd`: the artist cancelled from the progress bar (GIMP
    then ends the plug-in; the server also drops jobs whose client stops sending heartbeats).
    Both hosts' cancel check (GIMP 3 and, under Python 2.7, GIMP 2.10)."""
    import select

    if fd is None or not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLHUP | select.POLLERR)
    try:
        events = poller.poll(0)
    except (OSError, select.error):  # noqa: UP024 - Python 2.7: select.error is no OSError
        return True
    return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events)


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


def _check_size(job, w, h):
    if (w, h) != (job.width, job.height):
        raise UserError("The server sent a %dx%d result for a %dx%d image; update the server."
                        % (w, h, job.width, job.height))


def build_results(job, images, seeds, first_seed, preset):
    x0, y0, x1, y1 = job.edit_box
    out = []
    for i, (rgb, w, h) in enumerate(images):
        _check_size(job, w, h)
        seed = seeds[i] if i < len(seeds) else first_seed + i
        cropped = M.crop(rgb, w, h, job.edit_box, channels=3)
        rgba = M.rgb_to_rgba(cropped, job.edit_alpha)
        layer = ResultLayer(procedures.result_layer_name(job.mode, preset, seed), x1 - x0,
                            y1 - y0, job.x + x0, job.y + y0, rgba)
        layer.seed = seed
        out.append(layer)
    return out


def input_layers(args):
    """The layers a run read (moved layer, masks, label maps): hidden when its result comes in,
    so that the canvas shows the result, not the artist's paste over it."""
    return [args[name] for name in LAYER_ARGS if args.get(name) is not None]


def result_stack(siblings, base_index, is_magic, is_result_group):
    """Where a new result group goes among the photo's siblings (top first) and which earlier
    result groups to hide: above the run of MAGIC-made items directly above the photo (its
    earlier results, label maps), so that it is the top-most of them and the canvas shows it.
    Returns (insert position, [earlier result groups in that run])."""
    top = base_index
    while top > 0 and is_magic(siblings[top - 1]):
        top -= 1
    return top, [s for s in siblings[top:base_index] if is_result_group(s)]


def estimate_seconds(info, params):
    """(seconds, preset figure) the server's estimates say this job takes, or (None, None)."""
    figure = (info.get("estimates") or {}).get(params.get("preset"))
    if not isinstance(figure, dict):
        return None, None
    try:
        rate = float(figure["seconds_per_iteration"])
        fixed = float(figure.get("fixed_seconds") or 0.0)
        iterations = int(params.get("iterations") or figure["iterations"])
    except (KeyError, TypeError, ValueError):
        return None, None
    return fixed + rate * iterations * max(1, int(params.get("samples") or 1)), figure


def preset_estimate_text(info, preset, samples=1, iterations=0):
    """What a dialog shows beside a preset: "about 3 min" (per the server's own figures), or ""
    when the server gave none."""
    seconds, figure = estimate_seconds(info, {"preset": preset, "samples": samples,
                                              "iterations": iterations})
    if seconds is None:
        return ""
    text = procedures.format_duration(seconds)
    if figure.get("source") not in ("measured", None):
        text += " (rough)"
    return text


def long_run_question(info, params, address):
    """The question to ask before a job estimated longer than LONG_RUN_S, or None."""
    seconds, figure = estimate_seconds(info, params)
    if seconds is None or seconds <= LONG_RUN_S:
        return None
    device = info.get("device") or "its device"
    how = {"measured": "measured on this server's earlier runs",
           "other preset": "from this server's runs of another preset",
           "start-up probe": "a rough figure from this server's start-up"}.get(
        figure.get("source"), "the server's figure")
    n = int(params.get("samples") or 1)
    return ("This run is estimated to take %s on the MAGIC server at %s (%s; %s, %d sample%s, "
            "%s). Start it anyway? (A faster preset, fewer samples or fewer iterations make it "
            "shorter.)" % (procedures.format_duration(seconds)[len("about "):], address, device,
                           params.get("preset"), n, "" if n == 1 else "s", how))


def label_map_layers(job, images):
    """The label map twice, over the whole photo, top first: the copy to paint on (shown half
    transparent over the photo) and the source map (hidden: it stays as the server made it)."""
    rgb, w, h = images[0]
    _check_size(job, w, h)
    rgba = bytes(M.rgb_to_rgba(rgb, job.edit_alpha))
    target = ResultLayer(procedures.TARGET_LABELS_LAYER, w, h, job.x, job.y, rgba,
                         opacity=procedures.TARGET_LABELS_OPACITY)
    source = ResultLayer(procedures.SOURCE_LABELS_LAYER, w, h, job.x, job.y, rgba, visible=False)
    return [target, source]


def label_map_next_steps(notes):
    text = ("MAGIC made a label map of the photo: '%s' (hidden; leave it as it is) and a copy "
            "above it, '%s'. Paint the layout you want on the copy: pick a label colour on it "
            "with the Color Picker, paint with the Pencil tool (no anti-aliasing), then select "
            "the photo layer and run Filters > MAGIC > Layout edit with these two layers."
            % (procedures.SOURCE_LABELS_LAYER, procedures.TARGET_LABELS_LAYER))
    if notes:
        text += " Note: %s." % "; ".join(n.rstrip(".") for n in notes)
    return text


def _check_server(job, info, args, address):
    """What the handshake says about this job: size, preset, mode."""
    max_pixels = int(info.get("max_pixels") or 0)
    if max_pixels and job.width * job.height > max_pixels:
        raise UserError("The image is too large: %dx%d = %d pixels, the server accepts at most "
                        "%d. Scale the layer down or crop it first."
                        % (job.width, job.height, job.width * job.height, max_pixels))
    presets = info.get("presets") or []
    if presets and "preset" in args and args["preset"] not in presets:
        raise UserError("The server does not know the preset '%s'; it offers: %s."
                        % (args["preset"], ", ".join(presets)))
    modes = info.get("modes") or []
    if modes and job.mode not in modes:
        raise UserError("The MAGIC server at %s is too old for %s jobs: update magic-server."
                        % (address, job.mode))


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
        layers, message = _run_job(host, runner, image, base, job, args, config, address)
    finally:
        host.progress_end()
    if message:
        host.tell(message)
    return layers


def _run_job(host, runner, image, base, job, args, config, address):
    """Connect, submit, insert. Returns (ResultLayers, a message for the artist or None)."""
    mode = job.mode
    host.progress_update(0.0, "MAGIC %s: connecting to %s" % (mode, address))
    info = connect(host, runner, address, config)
    _check_server(job, info, args, address)
    preview = bool(getattr(host, "wants_preview", False))
    params = job_params(job, args, preview)
    question = long_run_question(info, params, address) if mode != procedures.LABEL_MAP else None
    confirm = getattr(host, "confirm", None)
    if question and confirm is not None and not confirm(question):
        raise UserError("Not started: the run was estimated to take too long. Pick a faster "
                        "preset, fewer samples or fewer iterations.", cancelled=True)
    request = {"width": job.width, "height": job.height, "image": job.image_rgba,
               "params": params, "init": job.init_rgba}
    request.update(job.frames())

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
        images, seeds, notes = runner.submit(address, request, on_event, host.cancel_requested,
                                             timeout)
    except RunnerError as exc:
        raise UserError(runner_message(exc, address), cancelled=exc.kind == "cancelled")
    finally:
        if preview:
            host.clear_preview(image)
    if not images:
        raise UserError("The MAGIC server returned no images.")
    if mode == procedures.LABEL_MAP:
        layers = label_map_layers(job, images)
        host.progress_update(1.0, "MAGIC %s: adding the label layers" % mode)
        host.insert_label_maps(image, base, layers)
        return layers, label_map_next_steps(notes)
    results = build_results(job, images, seeds, params["seed"], params["preset"])
    host.progress_update(1.0, "MAGIC %s: adding %d layer(s)" % (mode, len(results)))
    name = procedures.group_name(mode, params["preset"], [r.seed for r in results])
    host.insert_results(image, base, name, results, input_layers(args))
    return results, None
