# Runs INSIDE the GUI gimp-3.0 (python-fu-eval), started by gui_test.py with GUI_DIR set:
#   -b "GUI_DIR='/mnt/...'; exec(open(GUI_DIR + '/gui_batch.py').read())"
# Opens the test image (photo + hidden source and guide mask layers) in a window, then serves
# state requests until asked to stop: gui_test.py writes requests/N and this writes state/N.json
# with what GIMP itself says about the image (layer tree with each layer's size and offsets,
# selected layers, undo enabled, parasites), so every check reads GIMP's state, not pixels on the screen.
# Standard library + gi only.
import json
import os
import time

from gi.repository import Gimp, Gio

NI = Gimp.RunMode.NONINTERACTIVE


def gui_path(rel):
    return os.path.join(GUI_DIR, rel)  # noqa: F821 - set by the -b command


def gui_open():
    image = Gimp.file_load(NI, Gio.File.new_for_path(gui_path("inputs/photo.png")))
    photo = image.get_layers()[0]
    photo.set_name("photo")
    for name, rel in (("source mask", "inputs/source.png"), ("guide mask", "inputs/guide.png")):
        layer = Gimp.file_load_layer(NI, image, Gio.File.new_for_path(gui_path(rel)))
        layer.set_name(name)
        image.insert_layer(layer, None, 0)
        layer.set_visible(False)
    image.set_selected_layers([photo])
    image.clean_all()
    Gimp.Display.new(image)
    Gimp.displays_flush()
    return image


def gui_state(image):
    layers = []

    def walk(items, parent):
        for item in items:
            offsets = item.get_offsets()
            d = {"name": item.get_name(), "parent": parent, "id": item.get_id(),
                 "group": item.is_group(), "visible": item.get_visible(),
                 "box": [item.get_width(), item.get_height(), *offsets[-2:]]}
            layers.append(d)
            if d["group"]:
                walk(item.get_children(), d["name"])

    walk(image.get_layers(), None)
    return {"time": time.time(), "layers": layers,
            "selected": [la.get_name() for la in image.get_selected_layers()],
            "undo_enabled": bool(image.undo_is_enabled()),
            "dirty": bool(image.is_dirty()),
            "selection": not Gimp.Selection.is_empty(image),
            "parasites": list(image.get_parasite_list())}


def gui_serve(image):
    os.makedirs(gui_path("state"), exist_ok=True)
    req = gui_path("requests")
    os.makedirs(req, exist_ok=True)
    with open(gui_path("state/ready.json"), "w") as f:
        json.dump(gui_state(image), f)
    while True:
        names = sorted(os.listdir(req))
        for name in names:
            os.unlink(os.path.join(req, name))
            if name == "quit":
                return
            if name == "select-photo":  # what the artist does with a click in the Layers dock
                image.set_selected_layers([la for la in image.get_layers()
                                           if la.get_name() == "photo"])
                Gimp.displays_flush()
                continue
            if name.startswith("select-layer-"):  # a click on a layer in the Layers dock
                image.set_selected_layers([image.get_layer_by_name(name[len("select-layer-"):])])
                Gimp.displays_flush()
                continue
            if name.startswith("select-rect-"):  # the artist's rectangle select: x_y_w_h
                x, y, w, h = (int(v) for v in name[len("select-rect-"):].split("_"))
                image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
                Gimp.displays_flush()
                continue
            if name.startswith("move-layer-"):  # the artist drags a layer: NAME_DX_DY
                layer_name, dx, dy = name[len("move-layer-"):].rsplit("_", 2)
                layer = image.get_layer_by_name(layer_name)
                offsets = layer.get_offsets()
                layer.set_offsets(offsets[-2] + int(dx), offsets[-1] + int(dy))
                Gimp.displays_flush()
                continue
            tmp = gui_path("state/." + name)
            with open(tmp, "w") as f:
                json.dump(gui_state(image), f)
            os.replace(tmp, gui_path("state/" + name + ".json"))
        time.sleep(0.1)


gui_serve(gui_open())
