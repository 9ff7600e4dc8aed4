"""A small in-memory GIMP 3: images, layers with offsets, group layers, a selection channel,
GEGL-like buffers with the babl formats the plug-in uses, progress, undo groups, procedures.

Only the calls the plug-in makes exist, with GIMP 3.0's names and return shapes (e.g.
get_offsets() -> (True, x, y)); anything else raises AttributeError, so a typo in the plug-in
fails its unit tests instead of passing silently.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from types import SimpleNamespace

_ids = itertools.count(1)
_items: dict = {}  # id -> item, for Gimp.Layer.get_by_id


# ------------------------------------------------------------------------------------- Gegl

class Rectangle:
    def __init__(self, x: int, y: int, w: int, h: int) -> None:
        self.x, self.y, self.width, self.height = x, y, w, h

    @classmethod
    def new(cls, x, y, w, h):
        return cls(x, y, w, h)


Gegl = SimpleNamespace(Rectangle=Rectangle,
                       AbyssPolicy=SimpleNamespace(NONE="none", CLAMP="clamp"))

FORMATS = {"R'G'B'A u8": 4, "Y'A u8": 2, "Y u8": 1, "Y' u8": 1}


class Buffer:
    """Pixels stored as RGBA (layers) or Y (channels), in the owner's local frame."""

    def __init__(self, owner) -> None:
        self.owner = owner
        self.flushed = 0

    def get(self, rect, scale, fmt, abyss):
        assert scale == 1.0
        o = self.owner
        out = bytearray()
        for y in range(rect.y, rect.y + rect.height):
            for x in range(rect.x, rect.x + rect.width):
                inside = 0 <= x < o.width and 0 <= y < o.height
                if not inside and abyss == "none":
                    px = o.blank
                else:
                    cx, cy = min(max(x, 0), o.width - 1), min(max(y, 0), o.height - 1)
                    px = o.pixel(cx, cy)
                out += convert(px, o.channels, fmt)
        return list(out)  # PyGObject returns a list of ints here

    def set(self, rect, fmt, data):
        assert fmt == "R'G'B'A u8" and self.owner.channels == 4
        if not isinstance(data, (bytes, bytearray, memoryview, list)):
            raise TypeError(f"buffer.set wants bytes-like data, got {type(data).__name__}")
        data = bytes(data)
        assert len(data) == rect.width * rect.height * 4
        o = self.owner
        for row in range(rect.height):
            start = ((rect.y + row) * o.width + rect.x) * 4
            o.data[start:start + rect.width * 4] = data[row * rect.width * 4:
                                                         (row + 1) * rect.width * 4]

    def flush(self):
        self.flushed += 1


def convert(px: bytes, channels: int, fmt: str) -> bytes:
    if channels == 1:
        v = px[0]
        return {"Y u8": bytes([v]), "Y' u8": bytes([v]), "Y'A u8": bytes([v, 255]),
                "R'G'B'A u8": bytes([v, v, v, 255])}[fmt]
    r, g, b, a = px
    luma = (299 * r + 587 * g + 114 * b + 500) // 1000
    return {"R'G'B'A u8": bytes(px), "Y'A u8": bytes([luma, a]), "Y' u8": bytes([luma]),
            "Y u8": bytes([luma])}[fmt]


# ------------------------------------------------------------------------------------- Gimp

class Item:
    def __init__(self, image, name, width, height, channels) -> None:
        self.image, self.name = image, name
        self.width, self.height, self.channels = width, height, channels
        self.data = bytearray(width * height * channels)
        self.blank = bytes(channels)
        self.x = self.y = 0
        self.parent = None
        self.id = next(_ids)
        self.updates = []
        self.visible = True
        self.opacity = 100.0
        self.parasites: dict[str, Parasite] = {}
        _items[self.id] = self

    def get_parasite(self, name):
        return self.parasites.get(name)

    def attach_parasite(self, parasite):
        if parasite.flags & 2:  # GIMP_PARASITE_UNDOABLE
            self.image.history.append("parasite " + parasite.name)
        self.parasites[parasite.name] = parasite
        return True

    def pixel(self, x, y):
        i = (y * self.width + x) * self.channels
        return bytes(self.data[i:i + self.channels])

    def get_buffer(self):
        return Buffer(self)

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_offsets(self):
        return True, self.x, self.y

    def set_offsets(self, x, y):
        self.x, self.y = x, y
        return True

    def get_name(self):
        return self.name

    def get_id(self):
        return self.id

    def get_parent(self):
        return self.parent

    def get_image(self):
        return self.image

    def is_group(self):
        return False

    def get_visible(self):
        return self.visible

    def set_visible(self, visible):
        """Recorded in the undo history (GIMP pushes an undo step): see Image.undo."""
        if not self.image.frozen:
            self.image.history.append("visible " + str(self.name))
            self.image.undo_stack.append(("visible", self, self.visible))
        self.visible = bool(visible)
        return True

    def get_opacity(self):
        return self.opacity

    def update(self, x, y, w, h):
        self.updates.append((x, y, w, h))
        return True


class Layer(Item):
    @staticmethod
    def get_by_id(layer_id):
        item = _items.get(layer_id)
        return item if isinstance(item, Layer) else None

    @classmethod
    def new(cls, image, name, width, height, image_type, opacity, mode):
        assert image_type == ImageType.RGBA_IMAGE and 0.0 <= opacity <= 100.0
        layer = cls(image, name, width, height, 4)
        layer.opacity = float(opacity)
        return layer

    def scale(self, new_width, new_height, local_origin):
        """Nearest-neighbour resize (GIMP interpolates; the tests only look at flat colours)."""
        old, ow, oh = self.data, self.width, self.height
        self.data = bytearray(new_width * new_height * 4)
        for y in range(new_height):
            for x in range(new_width):
                i = ((y * oh // new_height) * ow + x * ow // new_width) * 4
                self.data[(y * new_width + x) * 4:(y * new_width + x) * 4 + 4] = old[i:i + 4]
        self.width, self.height = new_width, new_height
        return True

    def fill(self, rgba) -> Layer:
        self.data[:] = bytes(rgba) * (self.width * self.height)
        return self


class GroupLayer(Layer):
    def __init__(self, image, name) -> None:
        super().__init__(image, name, 1, 1, 4)
        self.children: list[Item] = []

    @classmethod
    def new(cls, image, name=None):
        return cls(image, name)

    def get_children(self):
        return list(self.children)

    def is_group(self):
        return True


class Channel(Item):
    pass


class Image:
    def __init__(self, width, height) -> None:
        self.width, self.height = width, height
        self.layers: list[Item] = []
        self.selection = Channel(self, "selection", width, height, 1)
        self.undo_depth = 0
        self.undo_groups = 0
        self.frozen = 0
        self.history: list[str] = []  # what the undo history recorded
        self.log: list[str] = []
        self.selected: list[Item] = []
        self.undo_stack: list[tuple] = []  # what Image.undo() reverts, newest last
        self.parasites: dict[str, Parasite] = {}
        self.id = next(_ids)

    def get_id(self):
        return self.id

    def get_layers(self):
        return list(self.layers)

    def undo(self):
        """Edit > Undo: revert the newest undo group (or single step) that was recorded."""
        if not self.undo_stack:
            return False
        steps = []
        while self.undo_stack:
            step = self.undo_stack.pop()
            if step[0] == "group-start":
                break
            steps.append(step)
        for step in steps:  # newest first
            if step[0] == "visible":
                step[1].visible = step[2]
            elif step[0] == "insert":
                self.siblings(step[1]).remove(step[1])
                step[1].parent = None
            elif step[0] == "remove":
                layer, parent, position = step[1:]
                layer.parent = parent
                (parent.children if parent is not None else self.layers).insert(position, layer)
        return True

    def set_selected_layers(self, layers):
        self.selected = list(layers)
        return True

    def get_selected_layers(self):
        return list(self.selected)

    def get_parasite(self, name):
        return self.parasites.get(name)

    def attach_parasite(self, parasite):
        if parasite.flags & 2:  # GIMP_PARASITE_UNDOABLE
            self.history.append("parasite " + parasite.name)
        self.parasites[parasite.name] = parasite
        return True

    def get_layer_by_name(self, name):
        def walk(items):
            for item in items:
                if item.name == name:
                    return item
                found = walk(getattr(item, "children", []))
                if found is not None:
                    return found
            return None

        return walk(self.layers)

    def undo_is_enabled(self):
        return self.frozen == 0

    def get_selection(self):
        return self.selection

    def select(self, x0, y0, x1, y1):
        for y in range(y0, y1):
            for x in range(x0, x1):
                self.selection.data[y * self.width + x] = 255

    def add(self, layer, x=0, y=0):
        """Test helper: put a layer on top, at image offsets (x, y)."""
        layer.set_offsets(x, y)
        self.layers.insert(0, layer)
        return layer

    def siblings(self, item):
        return item.parent.children if item.parent is not None else self.layers

    def insert_layer(self, layer, parent, position):
        if self.undo_depth == 0 and not self.frozen:
            self.log.append("insert outside an undo group")
        if not self.frozen:
            self.history.append("insert " + str(layer.name))
            self.undo_stack.append(("insert", layer))
        layer.parent = parent
        (parent.children if parent is not None else self.layers).insert(position, layer)
        return True

    def remove_layer(self, layer):
        if not self.frozen:
            self.history.append("remove " + str(layer.name))
            self.undo_stack.append(("remove", layer, layer.parent,
                                    self.get_item_position(layer)))
        self.siblings(layer).remove(layer)
        layer.parent = None
        return True

    def undo_freeze(self):
        self.frozen += 1
        return True

    def undo_thaw(self):
        if self.frozen == 0:
            raise AssertionError("undo_thaw without freeze")
        self.frozen -= 1
        return True

    def get_item_position(self, item):
        return self.siblings(item).index(item)

    def undo_group_start(self):
        if self.undo_depth == 0:
            self.undo_stack.append(("group-start",))
        self.undo_depth += 1
        self.undo_groups += 1
        return True

    def undo_group_end(self):
        if self.undo_depth == 0:
            raise AssertionError("undo_group_end without start")
        self.undo_depth -= 1
        return True


class Parasite:
    def __init__(self, name, flags, data):
        self.name, self.flags, self.data = name, flags, list(bytes(data))

    @classmethod
    def new(cls, name, flags, data):
        return cls(name, flags, data)

    def get_data(self):
        return list(self.data)  # PyGObject gives a list of ints


class Selection:
    @staticmethod
    def is_empty(image):
        return not any(image.selection.data)


class PDBStatusType:
    SUCCESS, CANCEL, EXECUTION_ERROR, CALLING_ERROR, PASS_THROUGH = (
        "SUCCESS", "CANCEL", "EXECUTION_ERROR", "CALLING_ERROR", "PASS_THROUGH")


class RunMode:
    INTERACTIVE, NONINTERACTIVE, WITH_LAST_VALS = "INTERACTIVE", "NONINTERACTIVE", "LAST_VALS"


class ImageType:
    RGB_IMAGE, RGBA_IMAGE = "RGB_IMAGE", "RGBA_IMAGE"


class Choice:
    def __init__(self):
        self.nicks = []

    @classmethod
    def new(cls):
        return cls()

    def add(self, nick, id, label, help):
        self.nicks.append(nick)


class Config:
    def __init__(self, values):
        self.values = dict(values)

    def get_property(self, name):
        if name not in self.values:
            raise TypeError(f"object has no property {name!r}")
        return self.values[name]

    def set_property(self, name, value):
        if name not in self.values:
            raise TypeError(f"object has no property {name!r}")
        self.values[name] = value


class Procedure:
    def __init__(self, plugin, name, proc_type, run_func, run_data):
        self.name, self.run_func = name, run_func
        self.args: dict[str, tuple] = {}
        self.menu_paths: list[str] = []
        self.label = self.image_types = None

    @classmethod
    def new(cls, *args):
        return cls(*args)

    def get_name(self):
        return self.name

    def _add(self, kind, name, *rest):
        assert name not in self.args, name
        assert rest[-1] == GObject.ParamFlags.READWRITE
        self.args[name] = (kind,) + rest[:-1]

    def add_layer_argument(self, name, nick, blurb, none_ok, flags):
        self._add("layer", name, nick, blurb, none_ok, flags)

    def add_int_argument(self, name, nick, blurb, lo, hi, value, flags):
        assert lo <= value <= hi
        self._add("int", name, nick, blurb, lo, hi, value, flags)

    def add_string_argument(self, name, nick, blurb, value, flags):
        self._add("string", name, nick, blurb, value, flags)

    def add_boolean_argument(self, name, nick, blurb, value, flags):
        assert isinstance(value, bool)
        self._add("bool", name, nick, blurb, value, flags)

    def add_choice_argument(self, name, nick, blurb, choice, value, flags):
        assert value in choice.nicks
        self._add("choice", name, nick, blurb, tuple(choice.nicks), value, flags)

    def set_image_types(self, types):
        self.image_types = types

    def set_sensitivity_mask(self, mask):
        pass

    def set_menu_label(self, label):
        self.label = label

    def add_menu_path(self, path):
        self.menu_paths.append(path)

    def set_documentation(self, blurb, help_text, help_id):
        self.blurb = blurb

    def set_attribution(self, authors, copyright, date):
        pass

    def new_return_values(self, status, error):
        return (status, None if error is None else error.message)


class Progress:
    def __init__(self):
        self.calls = []


PROGRESS = Progress()


def _record(name):
    def call(*args):
        PROGRESS.calls.append((name,) + args)
        return True
    return call


class PlugIn:
    pass


class GLibError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


Gimp = SimpleNamespace(
    Layer=Layer, GroupLayer=GroupLayer, Image=Image, Selection=Selection, Choice=Choice,
    Parasite=Parasite,
    ImageType=ImageType, LayerMode=SimpleNamespace(NORMAL="NORMAL"),
    PDBStatusType=PDBStatusType, RunMode=RunMode, PlugIn=PlugIn,
    ImageProcedure=Procedure, PDBProcType=SimpleNamespace(PLUGIN="PLUGIN"),
    ProcedureSensitivityMask=SimpleNamespace(DRAWABLE="DRAWABLE"),
    progress_init=_record("init"), progress_update=_record("update"),
    progress_set_text=_record("text"), progress_pulse=_record("pulse"),
    progress_end=_record("end"), displays_flush=_record("flush"), message=_record("message"),
    main=lambda *a: 0,
)
GLib = SimpleNamespace(Error=GLibError)
GObject = SimpleNamespace(ParamFlags=SimpleNamespace(READWRITE="READWRITE"))


@contextlib.contextmanager
def installed():
    """Make `import gi` find this fake (fakes/gi, as GIMP 3's Python finds PyGObject); forget
    the plug-in modules that imported it after."""
    import fakes.gi
    import fakes.gi.repository

    saved = {k: v for k, v in sys.modules.items() if k == "gi" or k.startswith("gi.")}
    for k in saved:
        del sys.modules[k]
    sys.modules["gi"], sys.modules["gi.repository"] = fakes.gi, fakes.gi.repository
    PROGRESS.calls.clear()
    try:
        yield Gimp
    finally:
        for k in [k for k in sys.modules if k == "gi" or k.startswith("gi.")
                  or k in ("gimp_plugin.gimp3_host", "magic_gimp3")]:
            del sys.modules[k]
        sys.modules.update(saved)
