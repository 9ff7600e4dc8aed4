#!/usr/bin/env python3
"""MAGIC for GIMP 3: mask-guided synthesis, move, copy and remove object (Filters > MAGIC).

Installed as <profile>/plug-ins/magic-gimp/magic-gimp.py next to the gimp_plugin and
magic_protocol packages and magic_gimp.json. Imports only the standard library, gi, pyzmq (via
magic_protocol.client, when a job runs) and those two packages.
"""

from __future__ import annotations

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

from gimp_plugin import procedures, settings, workflow

PLUG_IN_BINARY = "magic-gimp"
MENU_PATH = "<Image>/" + procedures.MENU_ROOT
PLUGIN_DIR = HERE


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
    return {a.name: config.get_property(a.name) for a in spec.args}


def fail(procedure, run_mode, message: str, cancelled: bool = False):
    # GIMP itself shows the returned error message ("Calling error for procedure ...") in the
    # error console or a dialog, in every run mode: no Gimp.message, or it would appear twice.
    status = Gimp.PDBStatusType.CANCEL if cancelled else Gimp.PDBStatusType.EXECUTION_ERROR
    return procedure.new_return_values(status, GLib.Error(message))


def show_dialog(procedure, config, spec) -> bool:
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init(PLUG_IN_BINARY)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "MAGIC - " + spec.label.strip("._"))
    dialog.fill(None)
    ok = dialog.run()
    dialog.destroy()
    return ok


def run_procedure(procedure, run_mode, image, drawables, config, data):
    spec = procedures.BY_NAME[procedure.get_name()]
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config, spec):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer) or drawables[0].is_group():
        return fail(procedure, run_mode, "Select exactly one (non-group) layer: the photo.")
    args = arguments(spec, config)
    mode = spec.mode or args["mode"]
    try:
        plugin_config = settings.load_config(PLUGIN_DIR)
    except ValueError as exc:
        return fail(procedure, run_mode, str(exc))
    from gimp_plugin.gimp3_host import DirectRunner, Gimp3Host

    try:
        # Preview frames only when someone watches; MAGIC_GIMP_PREVIEW=1 forces them (tests).
        preview = (run_mode == Gimp.RunMode.INTERACTIVE
                   or os.environ.get("MAGIC_GIMP_PREVIEW") == "1")
        host = Gimp3Host(preview=preview)
        workflow.run(host, DirectRunner(), image, drawables[0], mode, args, plugin_config)
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
