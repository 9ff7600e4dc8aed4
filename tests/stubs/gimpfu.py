"""The project's stand-in for GIMP 2.10's `gimpfu` module (the "gimpfu-stubs").

No GIMP 2.10 with Python-Fu can be installed here, and gimpfu exists on no package registry, so
the 2.10 plug-in is tested against this model of the parts it uses. It follows GIMP 2.10's
gimpfu/pygimp behaviour where the plug-in depends on it:
  - register(): the same argument order and sanity checks (name characters, 4-element params,
    integer PF_* types), "python-fu-" prefixing, `menu=` needing explicit image/drawable params;
  - non-interactive _run(): the function gets (image, drawable, *args); PF_OPTION is an int
    index, PF_SPINNER an int, PF_LAYER a layer or None;
  - an exception from the function is an EXECUTION_ERROR (pygimp); fail() = gimp.message+raise;
  - pixel regions: rgn[x0:x1, y0:y1] gets/sets a byte string in the drawable's own coordinates,
    bpp bytes per pixel (RGB 3, RGBA 4, GRAY 1, GRAYA 2, channels 1); reading outside fails.
Test helpers (not in the real gimpfu) start with `stub_`.
"""

# ruff: noqa: UP003, UP004, UP025, UP031, C408  (Python 2.7 + 3: the 2.10 plug-in is also run under 2.7)
import itertools
import string

PF_INT8, PF_INT16, PF_INT32, PF_FLOAT, PF_STRING = 0, 1, 2, 3, 4
PF_IMAGE, PF_LAYER, PF_CHANNEL, PF_DRAWABLE = 13, 14, 15, 16
PF_TOGGLE, PF_SLIDER, PF_SPINNER, PF_OPTION = 1000, 1002, 1003, 1012
PF_INT = PF_INT32

RGB_IMAGE, RGBA_IMAGE, GRAY_IMAGE, GRAYA_IMAGE = 0, 1, 2, 3
NORMAL_MODE = 0
RUN_INTERACTIVE, RUN_NONINTERACTIVE, RUN_WITH_LAST_VALS = 0, 1, 2
PDB_SUCCESS, PDB_EXECUTION_ERROR, PDB_CALLING_ERROR = "SUCCESS", "EXECUTION_ERROR", "CALLING_ERROR"

_BPP = {RGB_IMAGE: 3, RGBA_IMAGE: 4, GRAY_IMAGE: 1, GRAYA_IMAGE: 2}
_ids = itertools.count(1)


class error(RuntimeError):
    pass


# -------------------------------------------------------------------------------- drawables

class PixelRgn(object):
    def __init__(self, drawable, x, y, w, h, dirty, shadow):
        self.drawable, self.x, self.y, self.w, self.h = drawable, x, y, w, h
        self.dirty = dirty

    def _box(self, key):
        xs, ys = key
        x0, x1, y0, y1 = xs.start, xs.stop, ys.start, ys.stop
        if not (self.x <= x0 < x1 <= self.x + self.w and self.y <= y0 < y1 <= self.y + self.h):
            raise IndexError("pixel region slice out of range")
        return x0, y0, x1, y1

    def __getitem__(self, key):
        x0, y0, x1, y1 = self._box(key)
        d, bpp = self.drawable, self.drawable.bpp
        return b"".join(bytes(d.data[(y * d.width + x0) * bpp:(y * d.width + x1) * bpp])
                        for y in range(y0, y1))

    def __setitem__(self, key, value):
        if not self.dirty:
            raise TypeError("pixel region is not dirty (read-only)")
        if not isinstance(value, bytes):  # pygimp wants a (byte) string: str in Python 2
            raise TypeError("pixel region data must be a string")
        x0, y0, x1, y1 = self._box(key)
        d, bpp = self.drawable, self.drawable.bpp
        row = (x1 - x0) * bpp
        if len(value) != row * (y1 - y0):
            raise ValueError("wrong data length")
        for i, y in enumerate(range(y0, y1)):
            d.data[(y * d.width + x0) * bpp:(y * d.width + x1) * bpp] = value[i * row:
                                                                               (i + 1) * row]


class Drawable(object):
    def __init__(self, image, name, width, height, bpp):
        self.image, self.name, self.width, self.height, self.bpp = image, name, width, height, bpp
        self.ID = next(_ids)
        self.data = bytearray(width * height * bpp)
        self._offsets = (0, 0)
        self.flushed = self.merged = 0
        self.updates = []

    @property
    def offsets(self):
        return self._offsets

    def set_offsets(self, x, y):
        self._offsets = (x, y)

    def get_pixel_rgn(self, x, y, w, h, dirty=True, shadow=False):
        return PixelRgn(self, x, y, w, h, dirty, shadow)

    def flush(self):
        self.flushed += 1

    def merge_shadow(self, undo=True):
        self.merged += 1

    def update(self, x, y, w, h):
        self.updates.append((x, y, w, h))

    def __eq__(self, other):
        return isinstance(other, Drawable) and other.ID == self.ID

    def __hash__(self):
        return self.ID


class Layer(Drawable):
    def __init__(self, image, name, width, height, type=RGBA_IMAGE, opacity=100.0,
                 mode=NORMAL_MODE):
        Drawable.__init__(self, image, name, width, height, _BPP[type])
        self.type = type
        self.opacity = float(opacity)
        self.visible = True
        self.has_alpha = type in (RGBA_IMAGE, GRAYA_IMAGE)
        self.parent = None
        self.children = []

    @property
    def is_group(self):
        return isinstance(self, GroupLayer)

    def stub_fill(self, pixel):
        assert len(pixel) == self.bpp
        self.data[:] = bytes(pixel) * (self.width * self.height)
        return self


class GroupLayer(Layer):
    def __init__(self, image, name=""):
        Layer.__init__(self, image, name, 1, 1, RGBA_IMAGE)

    @property
    def layers(self):  # pygimp's GroupLayer.layers: the children, top first
        return list(self.children)


class Channel(Drawable):
    def __init__(self, image, name, width, height):
        Drawable.__init__(self, image, name, width, height, 1)


class Image(object):
    def __init__(self, width, height, type=0):
        self.width, self.height = width, height
        self.ID = next(_ids)
        self.layers = []
        self.selection = Channel(self, "Selection Mask", width, height)
        self.undo_depth = self.undo_groups = 0
        self.log = []
        self.active_layer = None

    def stub_add(self, layer, x=0, y=0):
        layer.set_offsets(x, y)
        self.layers.insert(0, layer)
        return layer

    def stub_select(self, x0, y0, x1, y1):
        for y in range(y0, y1):
            self.selection.data[y * self.width + x0:y * self.width + x1] = b"\xff" * (x1 - x0)


# -------------------------------------------------------------------------------- gimp / pdb

class _Pdb(object):
    def gimp_selection_is_empty(self, image):
        return not any(image.selection.data)

    def gimp_layer_group_new(self, image):
        return GroupLayer(image)

    def gimp_image_insert_layer(self, image, layer, parent, position):
        if image.undo_depth == 0:
            image.log.append("insert outside an undo group")
        if layer.bpp not in (4, 3):
            raise RuntimeError("Procedure 'gimp-image-insert-layer' returned no return values")
        siblings = parent.children if parent is not None else image.layers
        layer.parent = parent
        siblings.insert(position, layer)

    def gimp_image_get_item_position(self, image, item):
        siblings = item.parent.children if item.parent is not None else image.layers
        return siblings.index(item)

    def gimp_image_set_active_layer(self, image, layer):
        if layer not in image.layers and layer.parent is None:
            raise RuntimeError("Procedure 'gimp-image-set-active-layer' has been called with an "
                               "invalid ID for argument 'active-layer'")
        image.active_layer = layer

    def gimp_item_get_parent(self, item):
        return item.parent

    def gimp_item_get_visible(self, item):
        return item.visible

    def gimp_item_set_visible(self, item, visible):
        if item.image.undo_depth == 0:
            item.image.log.append("visibility outside an undo group")
        item.visible = bool(visible)

    def gimp_image_remove_layer(self, image, layer):
        if image.undo_depth == 0:
            image.log.append("remove outside an undo group")
        siblings = layer.parent.children if layer.parent is not None else image.layers
        siblings.remove(layer)
        layer.parent = None

    def gimp_image_undo_group_start(self, image):
        image.undo_depth += 1
        image.undo_groups += 1

    def gimp_image_undo_group_end(self, image):
        if image.undo_depth == 0:
            raise RuntimeError("undo group end without start")
        image.undo_depth -= 1

    def gimp_progress_set_text(self, text):
        stub_calls.append(("text", text))

    def gimp_progress_pulse(self):
        stub_calls.append(("pulse",))


stub_calls = []
pdb = _Pdb()
class _Namespace(object):
    def __init__(self, **kw):
        self.__dict__.update(kw)


gimp = _Namespace(
    Layer=Layer, GroupLayer=GroupLayer, Image=Image, pdb=pdb,
    progress_init=lambda text=None: stub_calls.append(("init", text)),
    progress_update=lambda fraction: stub_calls.append(("update", fraction)),
    message=lambda text: stub_calls.append(("message", text)),
    displays_flush=lambda: stub_calls.append(("flush",)),
)


def fail(msg):
    gimp.message(msg)
    raise error(msg)


# -------------------------------------------------------------------------------- register

_registered_plugins_ = {}
_PF_TYPES = {PF_INT8, PF_INT16, PF_INT32, PF_FLOAT, PF_STRING, PF_IMAGE, PF_LAYER, PF_CHANNEL,
             PF_DRAWABLE, PF_TOGGLE, PF_SLIDER, PF_SPINNER, PF_OPTION}
_ALLOWED = set(string.ascii_letters + string.digits + "_-")


def register(proc_name, blurb, help, author, copyright, date, label, imagetypes, params,
             results, function, menu=None, domain=None, on_query=None, on_run=None):
    if not set(proc_name) <= _ALLOWED:
        raise error("procedure name contains illegal characters")
    for ent in params:
        if len(ent) < 4:
            raise error("parameter definition must contain at least 4 elements")
        if type(ent[0]) is not int or ent[0] not in _PF_TYPES:
            raise error("parameter types must be integers")
        if not set(ent[1]) <= _ALLOWED:
            raise error("parameter name contains illegal characters")
        if ent[0] in (PF_SPINNER, PF_SLIDER, PF_OPTION) and len(ent) < 5:
            raise error("%s needs its bounds/options as 5th element" % ent[1])
    if not proc_name.startswith(("python-", "python_", "extension-", "plug-in-", "file-")):
        proc_name = "python-fu-" + proc_name
    if menu is not None and menu.startswith("<Image>"):
        kinds = [p[0] for p in params[:2]]
        if kinds != [PF_IMAGE, PF_DRAWABLE]:
            raise error("an <Image> procedure registered with menu= needs image and drawable "
                        "as its first two params")
    _registered_plugins_[proc_name] = dict(
        blurb=blurb, help=help, label=label, imagetypes=imagetypes, params=params,
        results=results, function=function, menu=menu)


def main():
    """gimp.main(None, None, _query, _run) in GIMP; nothing to do without GIMP."""


def _check_type(ent, value):
    kind = ent[0]
    if kind in (PF_LAYER, PF_DRAWABLE):
        ok = value is None or isinstance(value, Layer)
    elif kind == PF_IMAGE:
        ok = isinstance(value, Image)
    elif kind in (PF_INT8, PF_INT16, PF_INT32, PF_SPINNER, PF_OPTION, PF_TOGGLE):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and kind == PF_OPTION:
            ok = 0 <= value < len(ent[4])
    elif kind in (PF_FLOAT, PF_SLIDER):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, (str, type(u"")))
    if not ok:
        raise TypeError("wrong type for parameter %s: %r" % (ent[1], value))


def stub_run(proc_name, *params):
    """Call a registered procedure non-interactively the way pygimp does. Returns
    (status, message): an exception becomes EXECUTION_ERROR with its text."""
    proc = _registered_plugins_[proc_name]
    if len(params) != len(proc["params"]):
        return PDB_CALLING_ERROR, "wrong number of arguments"
    try:
        for ent, value in zip(proc["params"], params):
            _check_type(ent, value)
    except TypeError as exc:
        return PDB_CALLING_ERROR, str(exc)
    try:
        proc["function"](*params)
    except Exception as exc:  # noqa: BLE001 - pygimp turns any exception into an error status
        return PDB_EXECUTION_ERROR, str(exc)
    gimp.displays_flush()
    return PDB_SUCCESS, None


def stub_reset():
    _registered_plugins_.clear()
    stub_calls.clear()
