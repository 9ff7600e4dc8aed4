#!/usr/bin/env python3
"""MAGIC for GIMP 3: mask-guided synthesis, move, copy and remove object, label maps and layout
edits (Filters > MAGIC).

Installed as <profile>/plug-ins/magic-gimp/magic-gimp.py next to the gimp_plugin and
magic_protocol packages and magic_gimp.json. Imports only the standard library, gi, pyzmq (via
magic_protocol.client, when a job runs) and those two packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Installed: the packages sit next to this file. From a source tree: gimp_plugin/ is this folder.
ROOT = HERE if os.path.isdir(os.path.join(HERE, "gimp_plugin")) else os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject

from gimp_plugin import memory, procedures, settings, workflow

PLUG_IN_BINARY = "magic-gimp"
MENU_PATH = "<Image>/" + procedures.MENU_ROOT
PLUGIN_DIR = HERE
LAYOUT_PROCEDURE = "python-fu-magic-layout"


def add_argument(proc, arg) -> None:
    flags = GObject.ParamFlags.READWRITE
    if arg.kind == "layer":
        proc.add_layer_argument(arg.name, arg.label, arg.blurb, arg.optional, flags)
    elif arg.kind == "int":
        proc.add_int_argument(arg.name, arg.label, arg.blurb, arg.lo, arg.hi, arg.default, flags)
    elif arg.kind == "string":
        proc.add_string_argument(arg.name, arg.label, arg.blurb, arg.default, flags)
    elif arg.kind == "bool":
        proc.add_boolean_argument(arg.name, arg.label, arg.blurb, arg.default, flags)
    elif arg.kind == "choice":
        choice = Gimp.Choice.new()
        for i, nick in enumerate(arg.choices):
            choice.add(nick, i, nick, "")
        proc.add_choice_argument(arg.name, arg.label, arg.blurb, choice, arg.default, flags)
    else:
        raise ValueError(arg.kind)


def arguments(spec, config) -> dict:
    return procedures.arguments_of(spec, {a.name: config.get_property(a.name)
                                          for a in spec.args})


def fail(procedure, run_mode, message: str, cancelled: bool = False):
    # GIMP itself shows the returned error message ("Calling error for procedure ...") in the
    # error console or a dialog, in every run mode: no Gimp.message, or it would appear twice.
    status = Gimp.PDBStatusType.CANCEL if cancelled else Gimp.PDBStatusType.EXECUTION_ERROR
    if os.environ.get("MAGIC_GIMP_PREVIEW") == "1":  # tests: the message GIMP is handed
        print("MAGIC error: " + message, file=sys.stderr, flush=True)
    return procedure.new_return_values(status, GLib.Error(message))


def hide_test_presets(dialog, config, spec, info=None):
    """Test-only presets (tiny) stay valid for procedures but are not offered in the dialog;
    the others show the time the server estimates for one sample beside their name ("draft -
    about 2 min a sample"). Returns the presets the dialog's combo box offers then (None: no
    such combo box)."""
    if "preset" not in [a.name for a in spec.args]:
        return None  # e.g. the label map (its config has no such property)
    if config.get_property("preset") in procedures.TEST_PRESETS:
        config.set_property("preset", "draft")
    from gi.repository import GimpUi

    try:
        combo = dialog.get_widget("preset", GimpUi.StringComboBox.__gtype__)
        if hasattr(combo, "get_widget"):  # GimpLabelStringWidget: label + the combo box
            combo = combo.get_widget()
        model, column = combo.get_model(), combo.get_property("id-column")
    except Exception:  # noqa: BLE001 - another GIMP: keep the dialog usable
        return None
    try:
        label_column = combo.get_property("label-column")
    except Exception:  # noqa: BLE001
        label_column = None
    offered = []
    it = model.get_iter_first()
    while it is not None:
        value = model.get_value(it, column)
        if value in procedures.TEST_PRESETS:
            if not model.remove(it):
                break
        else:
            offered.append(value)
            estimate = workflow.preset_estimate_text(info or {}, value)
            if estimate and label_column is not None:
                with contextlib.suppress(Exception):
                    model.set_value(it, label_column, f"{value} - {estimate} a sample")
            it = model.iter_next(it)
    return offered


def estimate_line(info, values) -> str:
    """The dialog's time line for the current preset, samples and iterations."""
    if info is None:
        return ("unknown: the MAGIC server is not running (it is started when you press OK, "
                "when the installer set that up)")
    preset, samples = values.get("preset"), int(values.get("samples") or 1)
    seconds, figure = workflow.estimate_seconds(info, values)
    if seconds is None:
        return f"no estimate yet for {preset} on this server ({info.get('device') or '?'})"
    rough = "" if figure.get("source") == "measured" else ", rough until a run is measured"
    text = (f"{procedures.format_duration(seconds)} for {samples} sample(s) of {preset} on "
            f"this server ({info.get('device') or '?'}{rough})")
    if seconds > workflow.LONG_RUN_S:
        text += "; you will be asked before it starts"
    return text


def summary_text(spec, config, photo, info) -> str:
    values = arguments(spec, config)
    return procedures.dialog_summary(spec, values, lambda layer: layer.get_name(),
                                     photo.get_name() if photo is not None else "?",
                                     estimate_line(info, values))


def show_dialog(procedure, config, spec, photo=None, info=None) -> bool:
    """GIMP's dialog for the procedure, with a summary under it of what the run will use (the
    layers by name, the seed, the estimated time), kept up to date as the fields change."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PLUG_IN_BINARY)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, procedures.dialog_title(spec))
    dialog.fill(None)
    offered = hide_test_presets(dialog, config, spec, info)
    echo = os.environ.get("MAGIC_GIMP_PREVIEW") == "1"  # tests: what the real dialog shows
    summary = Gtk.Label(label="")
    summary.set_xalign(0.0)
    summary.set_line_wrap(True)
    summary.set_max_width_chars(60)
    summary.set_selectable(True)
    shown = {"text": None}

    def update(*_args):
        text = summary_text(spec, config, photo, info)
        if text != shown["text"]:
            shown["text"] = text
            summary.set_text(text)
            if echo:
                print(f"MAGIC dialog summary {spec.name}: " + text.replace("\n", " | "),
                      file=sys.stderr, flush=True)

    with contextlib.suppress(Exception):  # only a help: never stop the dialog for it
        frame = Gtk.Frame(label="This run will use")
        summary.set_margin_start(8)
        summary.set_margin_end(8)
        summary.set_margin_bottom(6)
        frame.add(summary)
        dialog.get_content_area().pack_end(frame, False, False, 6)
        frame.show_all()
        update()
        config.connect("notify", update)
    if echo:
        shown_values = {a.name: config.get_property(a.name) for a in spec.args
                        if a.name in ("preset", "samples")}
        print(f"MAGIC dialog {spec.name}: {json.dumps(shown_values, sort_keys=True)}; presets "
              f"offered: {json.dumps(offered)}", file=sys.stderr, flush=True)
    ok = dialog.run()
    dialog.destroy()
    return ok


# ------------------------------------------------------------------ remembered arguments

def load_memory(image) -> dict:
    parasite = image.get_parasite(memory.PARASITE_NAME)
    return memory.decode(parasite.get_data()) if parasite is not None else {}


def save_memory(image, spec, config, drawables) -> None:
    """Store this run's arguments and its photo on the image before it runs (a failed run
    keeps them)."""
    values, layers = {}, {}
    for a in spec.args:
        v = config.get_property(a.name)
        if a.kind == "layer":
            layers[a.name] = None if v is None else (v.get_id(), v.get_name())
        else:
            values[a.name] = v
    if len(drawables) == 1:
        layers[memory.PHOTO] = (drawables[0].get_id(), drawables[0].get_name())
    store_memory(image, memory.remember(load_memory(image), spec.name, values, layers))


def store_memory(image, store) -> None:
    # flags 0: neither persistent nor undoable (no undo step, the image stays clean)
    image.attach_parasite(Gimp.Parasite.new(memory.PARASITE_NAME, 0, memory.encode(store)))


def suggest_label_layers(image, layers, photo) -> None:
    """After a label map: the Layout edit dialog on this image offers its two new layers (and
    runs on the photo, though the copy to paint on is the selected layer)."""
    by_name = {r.name: r.layer for r in layers}
    refs = {arg: (layer.get_id(), layer.get_name()) for arg, layer in (
        ("source-labels", by_name[procedures.SOURCE_LABELS_LAYER]),
        ("target-labels", by_name[procedures.TARGET_LABELS_LAYER]),
        (memory.PHOTO, photo))}
    store_memory(image, memory.suggest_layers(load_memory(image), LAYOUT_PROCEDURE, refs))


def find_layer(image, ref):
    layer_id, name = ref
    layer = Gimp.Layer.get_by_id(int(layer_id)) if layer_id is not None else None
    if layer is not None and layer.get_image().get_id() == image.get_id():
        return layer
    return image.get_layer_by_name(name) if name else None


def restore_memory(image, spec, config) -> bool:
    """Put the arguments remembered for this image back into config. True if values other than
    layers were remembered (layers alone may be a suggestion: see suggest_label_layers)."""
    found = memory.recall(load_memory(image), spec.name)
    if found is None:
        return False
    values, layers = found
    for a in spec.args:
        try:
            if a.kind == "layer" and a.name in layers:
                ref = layers[a.name]
                config.set_property(a.name, None if ref is None else find_layer(image, ref))
            elif a.name in values:
                config.set_property(a.name, values[a.name])
        except (TypeError, ValueError):
            continue  # a value this version no longer accepts: keep GIMP's
    return bool(values)


def made_by_magic(layer) -> bool:
    """Whether MAGIC added this layer (a result, its group or a label map)."""
    try:
        return layer.get_parasite(memory.MADE_PARASITE) is not None
    except Exception:  # noqa: BLE001 - another GIMP: treat it as the artist's layer
        return False


def rerun_photo(image, spec, drawables):
    """The layers to run on: GIMP's Redo selects the layer it adds back (MAGIC's result), so
    after Undo + Redo Filters > Repeat would run MAGIC on its own cropped result; after a label
    map the selected layer is the copy to paint on. When the one selected layer is one MAGIC
    made and the photo this procedure last ran on is still in the image, the run goes to that
    photo. Any other selection is the artist's choice and stays."""
    if len(drawables) != 1 or not made_by_magic(drawables[0]):
        return drawables
    found = memory.recall(load_memory(image), spec.name)
    ref = found[1].get(memory.PHOTO) if found is not None else None
    photo = find_layer(image, ref) if ref else None
    if photo is None or made_by_magic(photo) or photo.is_group():
        return drawables
    return [photo]


def server_info(config, plugin_config, timeout_s=0.5):
    """The server's handshake (device, presets, time estimates) for the dialog, or None when
    it does not answer at once (not running, no pyzmq, a bad server field)."""
    from gimp_plugin.gimp3_host import DirectRunner

    try:
        address = settings.resolve_address(config.get_property("server-address"),
                                           plugin_config)
        runner = DirectRunner(curve=settings.curve_options(
            config.get_property("server-address"), plugin_config))
        return runner.handshake(address, timeout_s)
    except Exception:  # noqa: BLE001 - no server, no pyzmq, bad field: nothing known
        return None


def fit_defaults_to_server(spec, config, plugin_config, info=False) -> None:
    """First run on an image with the registered defaults: preset and samples that fit the
    server (draft, 1 sample on a CPU; quality, 3 on a GPU; draft when no server answers).
    info: the server's handshake (None: it did not answer); left out, it is asked here."""
    names = [a.name for a in spec.args]
    if "preset" not in names or "samples" not in names:
        return  # e.g. the label map: nothing to fit
    if any(config.get_property(k) != spec.arg(k).default for k in ("preset", "samples")):
        return
    if info is False:
        info = server_info(config, plugin_config)
    device = (info or {}).get("device")
    for k, v in procedures.server_defaults(device).items():
        config.set_property(k, v)


def vary_seed(spec, config) -> None:
    """Vary on: this run's new seed, set before the dialog shows it (and for Repeat)."""
    if "vary" in [a.name for a in spec.args] and config.get_property("vary"):
        config.set_property("seed", procedures.new_seed())


def keep_sample(procedure, image, drawables):
    from gimp_plugin.gimp3_host import keep_sample as keep

    if len(drawables) != 1:
        return fail(procedure, None, "Select one MAGIC result layer (a sample inside a 'MAGIC "
                                     "...' group) in the Layers dock, then run Keep this sample.")
    try:
        said = keep(image, drawables[0])
    except ValueError as exc:
        return fail(procedure, None, str(exc))
    if os.environ.get("MAGIC_GIMP_PREVIEW") == "1":  # tests: what was done
        print("MAGIC keep: " + said, file=sys.stderr, flush=True)
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


def run_procedure(procedure, run_mode, image, drawables, config, data):
    spec = procedures.BY_NAME[procedure.get_name()]
    if spec.mode == procedures.KEEP:
        return keep_sample(procedure, image, drawables)
    try:
        plugin_config = settings.load_config(PLUGIN_DIR)
    except ValueError as exc:
        return fail(procedure, run_mode, str(exc))
    info = None
    if run_mode != Gimp.RunMode.NONINTERACTIVE:
        try:
            remembered = restore_memory(image, spec, config)
        except Exception:  # noqa: BLE001 - a memory problem must not stop the run
            remembered = False
        try:
            drawables = rerun_photo(image, spec, drawables)
        except Exception as exc:  # noqa: BLE001 - the same: run on the selection then
            print(f"MAGIC: could not find the remembered photo: {exc}", file=sys.stderr)
        vary_seed(spec, config)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            info = server_info(config, plugin_config)
            if not remembered:
                fit_defaults_to_server(spec, config, plugin_config, info)
    photo = drawables[0] if len(drawables) == 1 else None
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config, spec, photo,
                                                                info):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
    if run_mode != Gimp.RunMode.NONINTERACTIVE:
        try:
            save_memory(image, spec, config, drawables)
        except Exception as exc:  # noqa: BLE001 - the run itself can still go on
            print(f"MAGIC: could not remember the arguments: {exc}", file=sys.stderr)
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer) or drawables[0].is_group():
        return fail(procedure, run_mode, "Select exactly one (non-group) layer: the photo.")
    args = arguments(spec, config)
    mode = spec.mode or args["mode"]
    from gimp_plugin.gimp3_host import DirectRunner, Gimp3Host

    try:
        # Preview frames only when someone watches; MAGIC_GIMP_PREVIEW=1 forces them (tests).
        preview = (run_mode != Gimp.RunMode.NONINTERACTIVE
                   or os.environ.get("MAGIC_GIMP_PREVIEW") == "1")
        host = Gimp3Host(preview=preview)
        host.interactive = run_mode != Gimp.RunMode.NONINTERACTIVE
        try:
            curve = settings.curve_options(args.get("server-address"), plugin_config)
        except ValueError as exc:
            raise workflow.UserError(str(exc)) from None
        runner = DirectRunner(curve=curve, guard=True)
        layers = workflow.run(host, runner, image, drawables[0], mode, args, plugin_config)
        if mode == procedures.LABEL_MAP:
            try:
                suggest_label_layers(image, layers, drawables[0])
            except Exception as exc:  # noqa: BLE001 - the layers are there; only a convenience
                print(f"MAGIC: could not offer the label layers to Layout edit: {exc}",
                      file=sys.stderr)
    except workflow.UserError as exc:
        return fail(procedure, run_mode, exc.message, exc.cancelled)
    except Exception as exc:  # noqa: BLE001 - never a bare traceback without a message
        return fail(procedure, run_mode,
                    f"MAGIC failed unexpectedly: {type(exc).__name__}: {exc}")
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


class MagicPlugIn(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [p.name for p in procedures.PROCEDURES]

    def do_create_procedure(self, name):
        spec = procedures.BY_NAME[name]
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run_procedure, None)
        proc.set_image_types("RGB*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label(spec.label)
        proc.add_menu_path(MENU_PATH)
        proc.set_documentation(spec.blurb, spec.blurb + " Arguments: " + ", ".join(
            a.name for a in spec.args) + ".", name)
        proc.set_attribution("MAGIC for GIMP contributors", "MIT licence", "2026")
        for arg in spec.args:
            add_argument(proc, arg)
        return proc


if __name__ == "__main__":
    Gimp.main(MagicPlugIn.__gtype__, sys.argv)
