# ruff: noqa: UP004, UP031  (Python 2.7 compatible: GIMP 2.10)
"""What a run reads from GIMP: the photo, the masks or label maps its procedure takes, and the
area of the result layers, as one EditRequest (Python 2.7 + 3, standard library only; GIMP is
reached through the run's `host`, see workflow.py)."""

from gimp_plugin import masks as M
from gimp_plugin import procedures
from gimp_plugin.errors import UserError

HARD_MAX_SIDE = 65535  # the protocol's frame limit


class EditRequest(object):
    """Everything computed from the image before talking to the server."""

    def __init__(self, mode, width, height, x, y, image_rgba, edit_box, edit_alpha, source=None,
                 guide=None, init_rgba=None, source_labels=None, target_labels=None):
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
        self.source_labels = source_labels  # layout edits: RGB label maps in the base frame
        self.target_labels = target_labels

    def frames(self):
        """The request's frames of this job's mode (see the runner contract)."""
        if self.mode == procedures.LAYOUT:
            return {"source_labels": self.source_labels, "target_labels": self.target_labels}
        if self.mode == procedures.LABEL_MAP:
            return {}
        return {"source_mask": self.source, "guide_mask": self.guide}


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


LAYER_ARGS = ("source-mask", "guide-mask", "moved-layer", "source-labels", "target-labels")


def _base_geometry(host, base, args):
    if base is None:
        raise UserError("Select one layer (the photo) to work on.")
    w, h, bx, by = host.layer_geometry(base)
    if w > HARD_MAX_SIDE or h > HARD_MAX_SIDE:
        raise UserError("The image is too large (%dx%d); the largest side allowed is %d pixels: "
                        "scale it down or crop it first." % (w, h, HARD_MAX_SIDE))
    for name in LAYER_ARGS:
        layer = args.get(name)
        if layer is not None and host.same_layer(layer, base):
            kind = "label" if name.endswith("labels") else "mask"
            raise UserError("The %s layer is the active layer itself: pick the %s layer there and "
                            "make the photo the active layer." % (name, kind))
    return w, h, bx, by


def collect(host, image, base, mode, args):
    """Read the layers and build the masks for `mode`, from what the procedure named by
    args["procedure"] reads (procedures.READS_*); raises UserError for anything wrong."""
    geometry = _base_geometry(host, base, args)
    if mode == procedures.LABEL_MAP:
        return _label_map_job(host, base, geometry)
    if mode == procedures.LAYOUT:
        return _layout_job(host, base, geometry, args)
    w, h, bx, by = geometry
    selection = host.read_selection(image, bx, by, w, h)

    init = None
    reads = procedures.BY_NAME[args["procedure"]].reads
    if reads == procedures.READS_SELECTION:  # Remove object
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
    elif reads == procedures.READS_MOVED_LAYER:
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

    box, alpha = _edit_area(geometry, args, M.union(source, guide))
    return EditRequest(mode=mode, width=w, height=h, x=bx, y=by,
                       image_rgba=bytearray(host.read_rgba(base)), source=source, guide=guide,
                       edit_box=box, edit_alpha=alpha, init_rgba=init)


def _edit_area(geometry, args, marked):
    """(box, alpha) of the result layers: the marked pixels plus a blending border, or the
    whole layer."""
    w, h = geometry[:2]
    if args.get("region", procedures.REGIONS[0]) == "whole-image":
        return (0, 0, w, h), bytearray(b"\xff") * (w * h)
    area = M.dilate(marked, w, h, blend_margin(w, h))
    box = M.bbox(area, w, h)
    return box, M.crop(area, w, h, box)


PICK_LABELS = {
    "source-labels": "Pick the source labels layer: the photo's label map, one flat colour per "
                     "region (Filters > MAGIC > Label map makes a first one).",
    "target-labels": "Pick the target labels layer: a copy of the source labels painted over "
                     "with their own colours where the photo should change.",
}


def _layout_job(host, base, geometry, args):
    """A layout edit: the two label maps (RGB, in the photo's frame); the result layers cover
    where they differ plus a border."""
    for name in ("source-labels", "target-labels"):
        if args.get(name) is None:
            raise UserError(PICK_LABELS[name])
    source_layer, target_layer = args["source-labels"], args["target-labels"]
    if host.same_layer(source_layer, target_layer):
        raise UserError("The source and target labels are the same layer ('%s'): pick the photo's "
                        "label map as source labels and the copy you painted on as target "
                        "labels." % host.layer_name(source_layer))
    source = _label_map(host, source_layer, "source labels", geometry)
    target = _label_map(host, target_layer, "target labels", geometry)
    changed = M.differ(source, target)
    if M.is_empty(changed):
        raise UserError("The target labels layer '%s' shows the same map as the source labels: "
                        "paint the layout you want on it first (the pencil tool, with a colour "
                        "picked from the map)." % host.layer_name(target_layer))
    w, h, bx, by = geometry
    box, alpha = _edit_area(geometry, args, changed)
    return EditRequest(mode=procedures.LAYOUT, width=w, height=h, x=bx, y=by,
                       image_rgba=bytearray(host.read_rgba(base)), edit_box=box, edit_alpha=alpha,
                       source_labels=source, target_labels=target)


def _label_map(host, layer, what, geometry):
    """A label layer's colours in the photo's frame (RGB). It must cover the photo (parts
    outside it are cropped) and be opaque there: a transparent pixel is no label."""
    w, h, bx, by = geometry
    lw, lh, lx, ly = host.layer_geometry(layer)
    name = host.layer_name(layer)
    if lx > bx or ly > by or lx + lw < bx + w or ly + lh < by + h:
        raise UserError("The %s layer '%s' (%dx%d at %d,%d) does not cover the photo layer "
                        "(%dx%d at %d,%d): a label map needs the photo's size and position (make "
                        "one with Filters > MAGIC > Label map, or use Layer > Layer to Image "
                        "Size)." % (what, name, lw, lh, lx, ly, w, h, bx, by))
    rgba = M.place(host.read_rgba(layer), lw, lh, lx - bx, ly - by, w, h, channels=4)
    painted = M.threshold(rgba[3::4])
    hole = M.first_off(painted, w)
    if hole is not None:
        raise UserError("The %s layer '%s' is transparent at %d pixel(s), e.g. at x=%d, y=%d: a "
                        "label map must be opaque; paint them with a label colour (the pencil "
                        "tool)." % (what, name, w * h - M.count(painted), bx + hole[0],
                                    by + hole[1]))
    return M.rgba_to_rgb(rgba)


def _label_map_job(host, base, geometry):
    """A label-map job sends the photo alone; its answer becomes two whole-photo layers."""
    w, h, bx, by = geometry
    return EditRequest(mode=procedures.LABEL_MAP, width=w, height=h, x=bx, y=by,
                       image_rgba=bytearray(host.read_rgba(base)), edit_box=(0, 0, w, h),
                       edit_alpha=bytearray(b"\xff") * (w * h))


def _placed_rgba(host, layer, base_geometry):
    """The layer's RGBA pixels in the base layer's frame, transparent where it does not reach:
    the rough composite the server lays over the photo (the moved object where it should go)."""
    w, h, bx, by = base_geometry
    lw, lh, lx, ly = host.layer_geometry(layer)
    return M.place(host.read_rgba(layer), lw, lh, lx - bx, ly - by, w, h, channels=4)
