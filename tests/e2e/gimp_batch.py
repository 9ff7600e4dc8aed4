# Runs INSIDE gimp-console-3.0 (python-fu-eval), started by run.sh with E2E_DIR already set:
#   -b "E2E_DIR='/mnt/...'; exec(open(E2E_DIR + '/gimp_batch.py').read())"
# Builds one image per case from cases.json, calls the plug-in's procedure non-interactively,
# and records what came back (status, message, layer tree, result pixels, an exported PNG).
# Judging is left to check.py, outside GIMP. Standard library + gi only.
import hashlib
import json
import os
import time

from gi.repository import Gegl, Gimp, Gio

NI = Gimp.RunMode.NONINTERACTIVE
STATUS = {Gimp.PDBStatusType.SUCCESS: "SUCCESS", Gimp.PDBStatusType.CANCEL: "CANCEL",
          Gimp.PDBStatusType.EXECUTION_ERROR: "EXECUTION_ERROR",
          Gimp.PDBStatusType.CALLING_ERROR: "CALLING_ERROR",
          Gimp.PDBStatusType.PASS_THROUGH: "PASS_THROUGH"}


def e2e_path(rel):
    return os.path.join(E2E_DIR, rel)  # noqa: F821 - set by the -b command


def e2e_pixels(layer):
    w, h = layer.get_width(), layer.get_height()
    return bytes(layer.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "R'G'B'A u8",
                                        Gegl.AbyssPolicy.CLAMP))


def e2e_describe(image):
    out = []

    def walk(layers, parent):
        for i, layer in enumerate(layers):
            _ok, x, y = layer.get_offsets()
            d = {"name": layer.get_name(), "parent": parent, "index": i, "x": x, "y": y,
                 "w": layer.get_width(), "h": layer.get_height(), "group": layer.is_group(),
                 "visible": layer.get_visible(), "opacity": round(layer.get_opacity(), 1)}
            if not d["group"]:
                d["md5"] = hashlib.md5(e2e_pixels(layer)).hexdigest()
            out.append(d)
            if d["group"]:
                walk(layer.get_children(), d["name"])

    walk(image.get_layers(), None)
    return out


def e2e_load_layer(image, rel, name, x, y):
    layer = Gimp.file_load_layer(NI, image, Gio.File.new_for_path(e2e_path(rel)))
    layer.set_name(name)
    image.insert_layer(layer, None, 0)
    layer.set_offsets(x, y)
    return layer


def e2e_build(spec, case):
    cw, ch = spec["canvas"]
    bx, by = spec["base_offset"]
    image = Gimp.Image.new(cw, ch, Gimp.ImageBaseType.RGB)
    base = e2e_load_layer(image, spec["big"] if case.get("big") else spec["photo"], "photo",
                          bx, by)
    layers = {}
    used = set(case["args"].values())
    for name, meta in spec["layers"].items():
        if meta.get("when_used") and name not in used:
            continue
        ox, oy = meta["offset"]
        layers[name] = e2e_load_layer(image, meta["file"], name, bx + ox, by + oy)
    if case["selection"]:
        x0, y0, x1, y1 = case["selection"]
        image.select_rectangle(Gimp.ChannelOps.REPLACE, bx + x0, by + y0, x1 - x0, y1 - y0)
    else:
        Gimp.Selection.none(image)
    return image, base, layers


E2E_LAYER_ARGS = ("source-mask", "guide-mask", "moved-layer", "source-labels", "target-labels")


def e2e_call(pdb, name, image, base, args, layers):
    """Run a procedure non-interactively: (status, message, seconds). A layer argument names an
    input layer, or "@NAME" a layer the plug-in made (found by name)."""
    proc = pdb.lookup_procedure(name)
    if proc is None:
        return "NOT_REGISTERED", name, 0.0
    cfg = proc.create_config()
    cfg.set_property("run-mode", NI)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", [base])
    for key, value in args.items():
        if key in E2E_LAYER_ARGS:
            value = (image.get_layer_by_name(value[1:]) if value.startswith("@")
                     else layers[value])
        cfg.set_property(key, value)
    t0 = time.time()
    res = proc.run(cfg)
    return (STATUS.get(res.index(0), str(res.index(0))),
            res.index(1) if res.length() > 1 else None, round(time.time() - t0, 2))


def e2e_paint(image, base, paint):
    """What the artist does with the colour picker and the pencil: the colour at `pick`
    (photo-local) filled into `box` on the named layer."""
    layer = image.get_layer_by_name(paint["layer"])
    _ok, bx, by = base.get_offsets()
    _ok, lx, ly = layer.get_offsets()
    px, py = paint["pick"]
    buf = layer.get_buffer()
    colour = bytes(buf.get(Gegl.Rectangle.new(bx + px - lx, by + py - ly, 1, 1), 1.0,
                           "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP))
    x0, y0, x1, y1 = paint["box"]
    w, h = x1 - x0, y1 - y0
    buf.set(Gegl.Rectangle.new(bx + x0 - lx, by + y0 - ly, w, h), "R'G'B'A u8", colour * (w * h))
    buf.flush()
    layer.update(bx + x0 - lx, by + y0 - ly, w, h)
    return list(colour)


def e2e_run_case(spec, case, pdb):
    image, base, layers = e2e_build(spec, case)
    before = e2e_describe(image)
    status, message, seconds = e2e_call(pdb, case["procedure"], image, base, case["args"], layers)
    if status == "NOT_REGISTERED":
        return {"id": case["id"], "status": status, "message": message}
    rec = {"id": case["id"], "seconds": seconds, "status": status, "message": message,
           "before": before}
    then = case.get("then")
    if then and status == "SUCCESS":
        rec["then"] = {"painted": e2e_paint(image, base, then["paint"]),
                       "before": e2e_describe(image)}
        status, message, seconds = e2e_call(pdb, then["procedure"], image, base, then["args"],
                                            layers)
        rec["then"].update(status=status, message=message, seconds=seconds)
    rec["after"] = e2e_describe(image)
    if status == "SUCCESS":
        outdir = e2e_path("results/" + case["id"])
        os.makedirs(outdir, exist_ok=True)
        for layer in image.get_layers():
            made = [] if layer.get_name() in layers or layer.get_id() == base.get_id() else [layer]
            for item in layer.get_children() if layer.is_group() else made:
                with open(os.path.join(outdir, item.get_name() + ".rgba"), "wb") as f:
                    f.write(e2e_pixels(item))
        dup = image.duplicate()
        for layer in dup.get_layers():  # the photo and the results only
            if not layer.is_group() and layer.get_name() != "photo":
                layer.set_visible(False)
        dup.flatten()
        png = os.path.join(outdir, "composite.png")
        Gimp.file_save(NI, dup, Gio.File.new_for_path(png), None)
        dup.delete()
        rec["composite"] = f"results/{case['id']}/composite.png"
    image.delete()
    return rec


def e2e_main():
    with open(e2e_path("cases.json")) as f:
        spec = json.load(f)
    pdb = Gimp.get_pdb()
    records = []
    for case in spec["cases"]:
        records.append(e2e_run_case(spec, case, pdb))
        print(f"E2E case {case['id']}: {records[-1]['status']} {records[-1]['message']}",
              flush=True)
    with open(e2e_path("results.json"), "w") as f:
        json.dump({"gimp_version": getattr(Gimp, "version", lambda: "?")(), "cases": records}, f, indent=1)


e2e_main()
