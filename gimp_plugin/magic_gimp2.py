#!/usr/bin/env python
# -*- coding: utf-8 -*-
# ruff: noqa: UP004, UP009  (Python 2.7 compatible: GIMP 2.10's Python-Fu)
"""MAGIC for GIMP 2.10 (Python-Fu / gimpfu): the same procedures as the GIMP 3 plug-in.

GIMP 2.10 runs this file with Python 2.7. The mask logic and the run are shared with GIMP 3
(gimp_plugin.workflow); the server is reached through a Python 3 bridge process
(gimp_plugin.bridge_client), because the shared client needs Python 3.

gimpfu's layer pickers cannot say "none": for the optional layers (source-mask, guide-mask,
moved-layer, source-labels, target-labels) picking the active layer itself means "none"
(source-mask: use the selection; the others are then missing, which the run explains).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = HERE if os.path.isdir(os.path.join(HERE, "gimp_plugin")) else os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from gimpfu import (
    NORMAL_MODE,
    PF_DRAWABLE,
    PF_IMAGE,
    PF_LAYER,
    PF_OPTION,
    PF_SPINNER,
    PF_STRING,
    PF_TOGGLE,
    RGBA_IMAGE,
    fail,
    gimp,
    main,
    pdb,
    register,
)

from gimp_plugin import masks, procedures, settings, workflow
from gimp_plugin.bridge_client import BridgeRunner
from gimp_plugin.workflow import gimp_hung_up

PLUGIN_DIR = HERE


def gimp_read_fd(argv):
    """GIMP 2.10 starts plug-ins as `... -gimp READ_FD WRITE_FD -run 0`."""
    try:
        return int(argv[argv.index("-gimp") + 1])
    except (ValueError, IndexError):
        return None


class Gimp2Host(object):
    """workflow's host for GIMP 2.10 (pixel regions, pdb undo groups, gimp.progress_*)."""

    def __init__(self):
        self._fd = gimp_read_fd(sys.argv)
        self._text = None

    def layer_geometry(self, layer):
        x, y = layer.offsets
        return layer.width, layer.height, x, y

    def layer_name(self, layer):
        return layer.name

    def same_layer(self, a, b):
        return a.ID == b.ID

    def _raw(self, layer):
        return layer.get_pixel_rgn(0, 0, layer.width, layer.height, False, False)[
            0:layer.width, 0:layer.height]

    def read_rgba(self, layer):
        data = bytearray(self._raw(layer))
        bpp, n = layer.bpp, layer.width * layer.height
        if bpp == 4:
            return data
        luma, alpha = masks.split_planes(data, bpp, layer.has_alpha)
        out = bytearray(n * 4)
        if bpp in (1, 2):
            out[0::4], out[1::4], out[2::4] = luma, luma, luma
        else:
            out[0::4], out[1::4], out[2::4] = data[0::3], data[1::3], data[2::3]
        out[3::4] = alpha
        return out

    def read_luma_alpha(self, layer):
        return masks.split_planes(self._raw(layer), layer.bpp, layer.has_alpha)

    def read_selection(self, image, x, y, w, h):
        if pdb.gimp_selection_is_empty(image):
            return None
        # Pixel regions cannot reach outside the image: read the overlap, pad with zeros.
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(image.width, x + w), min(image.height, y + h)
        if x0 >= x1 or y0 >= y1:
            return bytearray(w * h)
        rgn = image.selection.get_pixel_rgn(x0, y0, x1 - x0, y1 - y0, False, False)
        part = rgn[x0:x1, y0:y1]
        return masks.place(masks.threshold(part), x1 - x0, y1 - y0, x0 - x, y0 - y, w, h)

    def progress_start(self, text):
        gimp.progress_init(text)

    def progress_update(self, fraction, text):
        if text and text != self._text:
            pdb.gimp_progress_set_text(text)
            self._text = text
        if fraction is not None:  # None: keep the bar (one bar for the whole job)
            gimp.progress_update(fraction)

    def progress_end(self):
        gimp.progress_update(1.0)

    def cancel_requested(self):
        return gimp_hung_up(self._fd)

    def insert_results(self, image, base, group_name, results, hide=()):
        """As GIMP 3's: the group on top of the photo's earlier MAGIC results (hidden), the
        run's visible inputs hidden, one undo step. GIMP 2.10 has no MAGIC mark on layers: a
        layer or group whose name starts with "MAGIC " counts as MAGIC's."""
        pdb.gimp_image_undo_group_start(image)
        try:
            parent = pdb.gimp_item_get_parent(base)
            siblings = list(parent.layers if parent is not None else image.layers)
            position, earlier = workflow.result_stack(
                siblings, pdb.gimp_image_get_item_position(image, base), made_by_magic,
                lambda item: item.is_group and made_by_magic(item))
            for item in list(earlier) + list(hide):
                if pdb.gimp_item_get_visible(item):
                    pdb.gimp_item_set_visible(item, False)
            group = pdb.gimp_layer_group_new(image)
            group.name = group_name
            pdb.gimp_image_insert_layer(image, group, parent, position)
            for i, r in enumerate(results):
                insert_layer(image, r, group, i)
        finally:
            pdb.gimp_image_undo_group_end(image)
        gimp.displays_flush()

    def insert_label_maps(self, image, base, layers):
        pdb.gimp_image_undo_group_start(image)
        try:
            parent = pdb.gimp_item_get_parent(base)
            position = pdb.gimp_image_get_item_position(image, base)
            for r in reversed(layers):  # each one at the photo's old place pushes the rest down
                insert_layer(image, r, parent, position)
        finally:
            pdb.gimp_image_undo_group_end(image)
        pdb.gimp_image_set_active_layer(image, layers[0].layer)  # the copy to paint on
        gimp.displays_flush()

    def tell(self, text):
        gimp.message(text)


def made_by_magic(item):
    return item.name.startswith(procedures.RESULT_PREFIX)


def keep_sample(image, layer):
    """Keep this sample (see gimp3_host.keep_sample): the other samples of its group go."""
    group = pdb.gimp_item_get_parent(layer)
    if layer.is_group or not made_by_magic(layer) or group is None \
            or not made_by_magic(group):
        fail("Select one MAGIC result layer (a sample inside a 'MAGIC ...' group) in the "
             "Layers dialog, then run Keep this sample.")
    pdb.gimp_image_undo_group_start(image)
    try:
        for other in [c for c in group.layers if c.ID != layer.ID]:
            pdb.gimp_image_remove_layer(image, other)
        for item in (layer, group):
            if not pdb.gimp_item_get_visible(item):
                pdb.gimp_item_set_visible(item, True)
    finally:
        pdb.gimp_image_undo_group_end(image)
    pdb.gimp_image_set_active_layer(image, layer)
    gimp.displays_flush()


def insert_layer(image, r, parent, position):
    """One workflow.ResultLayer as a new RGBA layer; r.layer is then that layer."""
    layer = gimp.Layer(image, r.name, r.width, r.height, RGBA_IMAGE, r.opacity, NORMAL_MODE)
    pdb.gimp_image_insert_layer(image, layer, parent, position)
    layer.set_offsets(r.x, r.y)
    if not r.visible:
        layer.visible = False
    rgn = layer.get_pixel_rgn(0, 0, r.width, r.height, True, False)
    rgn[0:r.width, 0:r.height] = bytes(r.rgba)
    layer.flush()
    layer.update(0, 0, r.width, r.height)
    r.layer = layer


def gimpfu_params(spec):
    params = [(PF_IMAGE, "image", "Input image", None),
              (PF_DRAWABLE, "drawable", "Input drawable (the photo)", None)]
    for a in spec.args:
        label = a.plain_label
        if a.kind == "layer":
            if a.optional:
                label += " (the photo itself = none)"
            params.append((PF_LAYER, a.name, label, None))
        elif a.kind == "int":
            params.append((PF_SPINNER, a.name, label, a.default, (a.lo, a.hi, 1)))
        elif a.kind == "choice":
            params.append((PF_OPTION, a.name, label, a.choices.index(a.default),
                           list(a.choices)))
        elif a.kind == "bool":
            params.append((PF_TOGGLE, a.name, label, 1 if a.default else 0))
        else:
            params.append((PF_STRING, a.name, label, a.default))
    return params


def arguments(spec, drawable, values):
    args = {}
    for a, value in zip(spec.args, values):
        if a.kind == "choice":
            value = a.choices[int(value)]
        elif a.kind == "bool":
            value = bool(value)
        elif a.kind == "layer" and value is not None and value.ID == drawable.ID:
            value = None
        args[a.name] = value
    return procedures.arguments_of(spec, args)


def make_function(spec):
    def run(image, drawable, *values):
        if spec.mode == procedures.KEEP:
            keep_sample(image, drawable)
            return
        try:
            config = settings.load_config(PLUGIN_DIR)
        except ValueError as exc:
            fail(str(exc))
        args = arguments(spec, drawable, values)
        if args.get("vary"):
            # gimpfu's dialog cannot be told the new seed: the layer names show it
            args["seed"] = procedures.new_seed()
        mode = spec.mode or args["mode"]
        try:
            curve = settings.curve_options(args.get("server-address"), config)
        except ValueError as exc:
            fail(str(exc))
        runner = BridgeRunner(PLUGIN_DIR, python=config.get("python"), curve=curve)
        try:
            workflow.run(Gimp2Host(), runner, image, drawable, mode, args, config)
        except workflow.UserError as exc:
            fail(exc.message)
        finally:
            runner.close()

    run.__name__ = spec.name.replace("-", "_")
    return run


for _spec in procedures.PROCEDURES:
    register(_spec.name, _spec.blurb, _spec.blurb, "MAGIC for GIMP contributors",
             "MIT licence", "2026", _spec.label, "RGB*", gimpfu_params(_spec), [],
             make_function(_spec), menu="<Image>/" + procedures.MENU_ROOT)

main()
