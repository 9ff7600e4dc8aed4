"""Judge what the real GIMP produced (results.json + exported files) against cases.json.

Expected masks are recomputed here with numpy from the input files, independently of the
plug-in's own mask code. Prints one line per check; exit status 1 when any check fails.
Usage: python check.py WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, cond: bool, what: str) -> bool:
        if cond:
            self.passed += 1
        else:
            self.failures.append(what)
            print(f"FAIL {what}")
        return cond


def blend_margin(w: int, h: int) -> int:  # documented in gimp_plugin/workflow.py
    return max(4, (max(w, h) + 31) // 32)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    h, w = mask.shape
    pad = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= pad[dy:dy + h, dx:dx + w]
    return out


def expected_mask(work: Path, spec: dict, desc: dict, shape: tuple[int, int]) -> np.ndarray:
    if "union" in desc:
        out = np.zeros(shape, bool)
        for d in desc["union"]:
            out |= expected_mask(work, spec, d, shape)
        return out
    out = np.zeros(shape, bool)
    if "rect" in desc:
        x0, y0, x1, y1 = desc["rect"]
        out[y0:y1, x0:x1] = True
        return out
    if "differ" in desc:  # two label map layers: where their colours differ
        a, b = (placed(work, spec, name, shape)[..., :3] for name in desc["differ"])
        return (a != b).any(-1)
    meta = spec["layers"][desc["layer"]]
    if desc["rule"] == "alpha":
        return placed(work, spec, desc["layer"], shape)[..., 3] >= 128
    grey = np.asarray(Image.open(work / meta["file"]).convert("L"))
    return placed_array(grey, meta["offset"], shape) >= 128


def placed(work: Path, spec: dict, name: str, shape: tuple[int, int]) -> np.ndarray:
    """An input layer's RGBA pixels in the photo's frame (transparent where it does not reach)."""
    meta = spec["layers"][name]
    rgba = np.asarray(Image.open(work / meta["file"]).convert("RGBA"))
    return placed_array(rgba, meta["offset"], shape)


def placed_array(a: np.ndarray, offset, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    ox, oy = offset
    out = np.zeros((h, w) + a.shape[2:], a.dtype)
    mh, mw = a.shape[:2]
    ys, xs = slice(max(0, oy), min(h, oy + mh)), slice(max(0, ox), min(w, ox + mw))
    out[ys, xs] = a[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox]
    return out


def check_success(c: Checker, work: Path, spec: dict, case: dict, rec: dict) -> None:
    exp = case["expect"]
    shape = np.asarray(Image.open(work / spec["photo"])).shape[:2]
    marked = (expected_mask(work, spec, exp["source"], shape)
              | expected_mask(work, spec, exp["guide"], shape))
    check_edit(c, work, spec, case["id"], exp, rec, rec["before"], marked,
               input_layers(case["args"]))


LAYER_ARGS = ("source-mask", "guide-mask", "moved-layer", "source-labels", "target-labels")


def input_layers(args: dict) -> set[str]:
    """The names of the layers a case passes (hidden after a successful edit when visible)."""
    return {str(v).lstrip("@") for k, v in args.items() if k in LAYER_ARGS and v}


def result_group_name(mode: str, preset: str, seeds: list[int]) -> str:
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {min(seeds)}-{max(seeds)}"
    return f"MAGIC {mode} {preset} ({which})"


def check_edit(c: Checker, work: Path, spec: dict, cid: str, exp: dict, rec: dict,
               before: list[dict], marked: np.ndarray, inputs: set[str]) -> None:
    """An edit's result group on top of the photo's MAGIC layers directly above it, its layers
    opaque exactly on the marked area plus the blending border, the visible input layers
    hidden, nothing else changed. `before`: the layers before the edit."""
    photo = np.asarray(Image.open(work / spec["photo"]).convert("RGB"))
    h, w = photo.shape[:2]
    bx, by = spec["base_offset"]
    if exp.get("whole"):
        area = np.ones((h, w), bool)
    else:
        area = dilate(marked, blend_margin(w, h))
    ys, xs = np.nonzero(area)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1

    after = rec["after"]
    preset = exp.get("preset", "tiny")
    group_name = result_group_name(exp["mode"], preset, exp["seeds"])
    names = [f"MAGIC {exp['mode']} {preset} seed {s}" for s in exp["seeds"]]
    top = [d for d in after if d["parent"] is None]
    groups = [d for d in top if d["group"]]
    c.ok(len(groups) == 1 and groups[0]["name"] == group_name,
         f"{cid}: one new layer group named {group_name!r} (got {[g['name'] for g in groups]})")
    base_before = next(d for d in before if d["name"] == "photo")
    base_after = next(d for d in after if d["name"] == "photo")
    names_before = [d["name"] for d in sorted((d for d in before if d["parent"] is None),
                                              key=lambda d: d["index"])]
    place = names_before.index("photo")
    while place > 0 and names_before[place - 1].startswith("MAGIC "):
        place -= 1  # MAGIC's own layers directly above the photo (e.g. label maps)
    if groups:
        c.ok(groups[0]["index"] == place and
             base_after["index"] == base_before["index"] + 1,
             f"{cid}: the group sits on top of the photo's MAGIC layers, directly above them "
             f"(index {groups[0]['index']}, expected {place})")
    children = [d for d in after if d["parent"] == group_name]
    c.ok([d["name"] for d in children] == names,
         f"{cid}: result layers {names} (got {[d['name'] for d in children]})")
    # Nothing else in the image changed: same layers, offsets, sizes and pixels.
    # (Visibility apart: the visible input layers are hidden, so the canvas shows the result.)
    strip = [{k: v for k, v in d.items() if k not in ("index", "visible")} for d in before]
    kept_layers = [d for d in after if d["parent"] is None and not d["group"]]
    kept = [{k: v for k, v in d.items() if k not in ("index", "visible")} for d in kept_layers]
    c.ok(strip == kept, f"{cid}: the other layers are unchanged (names, offsets, pixels)")
    wanted = [d["visible"] and d["name"] not in inputs for d in before]
    got = [d["visible"] for d in kept_layers]
    c.ok(wanted == got, f"{cid}: exactly the visible input layers {sorted(inputs)} are hidden "
                        f"(visible before {[d['visible'] for d in before]}, after {got})")
    for d in children:
        c.ok((d["x"], d["y"], d["w"], d["h"]) == (bx + x0, by + y0, x1 - x0, y1 - y0),
             f"{cid}: layer {d['name']!r} at ({d['x']},{d['y']}) {d['w']}x{d['h']}, expected "
             f"({bx + x0},{by + y0}) {x1 - x0}x{y1 - y0}")
        raw = (work / "results" / cid / f"{d['name']}.rgba").read_bytes()
        px = np.frombuffer(raw, np.uint8).reshape(d["h"], d["w"], 4)
        c.ok(np.array_equal(px[..., 3] == 255, area[y0:y1, x0:x1]) and
             set(np.unique(px[..., 3])) <= {0, 255},
             f"{cid}: {d['name']!r} is opaque exactly on the edited area")
    comp = np.asarray(Image.open(work / rec["composite"]).convert("RGB"))
    comp = comp[by:by + h, bx:bx + w]
    c.ok(np.array_equal(comp[~area], photo[~area]),
         f"{cid}: exported composite equals the photo outside the edited area "
         f"({int((comp[~area] != photo[~area]).any(-1).sum())} pixels differ)")
    if children:
        raw = (work / "results" / cid / f"{children[0]['name']}.rgba").read_bytes()
        px = np.frombuffer(raw, np.uint8).reshape(children[0]["h"], children[0]["w"], 4)
        c.ok(np.array_equal(comp[y0:y1, x0:x1][area[y0:y1, x0:x1]],
                            px[..., :3][area[y0:y1, x0:x1]]),
             f"{cid}: inside the edited area the composite shows the top result layer")
        c.ok(not np.array_equal(comp[area], photo[area]),
             f"{cid}: the edited area changed")
    if "changed" in exp:
        x0, y0, x1, y1 = exp["changed"]
        c.ok(not np.array_equal(comp[y0:y1, x0:x1], photo[y0:y1, x0:x1]),
             f"{cid}: the object's own area {exp['changed']} changed")


SOURCE_LABELS, TARGET_LABELS = "MAGIC source labels", "MAGIC target labels (paint here)"


def result_pixels(work: Path, cid: str, d: dict) -> np.ndarray:
    raw = (work / "results" / cid / f"{d['name']}.rgba").read_bytes()
    return np.frombuffer(raw, np.uint8).reshape(d["h"], d["w"], 4)


def check_label_map(c: Checker, work: Path, spec: dict, cid: str, exp: dict,
                    before: list[dict], after: list[dict]) -> np.ndarray | None:
    """Two label layers directly above the photo, its size and place: the copy to paint on
    (visible, half transparent) on top, the source map (hidden) below; flat colours, at most
    `labels` of them. Returns the source map (RGB) or None."""
    bx, by = spec["base_offset"]
    photo = next(d for d in before if d["name"] == "photo")
    names = [d["name"] for d in before if d["parent"] is None]
    i = names.index("photo")
    wanted = names[:i] + [TARGET_LABELS, SOURCE_LABELS] + names[i:]
    got = [d["name"] for d in after if d["parent"] is None]
    if not c.ok(got == wanted, f"{cid}: the two label layers sit directly above the photo "
                               f"(got {got})"):
        return None
    target, source = (next(d for d in after if d["name"] == n)
                      for n in (TARGET_LABELS, SOURCE_LABELS))
    for d in (target, source):
        c.ok((d["x"], d["y"], d["w"], d["h"]) == (photo["x"], photo["y"], photo["w"], photo["h"])
             and (d["x"], d["y"]) == (bx, by),
             f"{cid}: {d['name']!r} has the photo's size and place")
    c.ok((target["visible"], target["opacity"], source["visible"]) == (True, 50.0, False),
         f"{cid}: the copy to paint on is shown at 50 %, the source map hidden (got "
         f"{target['visible']}, {target['opacity']}, {source['visible']})")
    kept = [{k: v for k, v in d.items() if k != "index"} for d in after
            if d["name"] not in (TARGET_LABELS, SOURCE_LABELS)]
    c.ok(kept == [{k: v for k, v in d.items() if k != "index"} for d in before],
         f"{cid}: the other layers are unchanged")
    px = result_pixels(work, cid, source)
    colours = np.unique(px[..., :3].reshape(-1, 3), axis=0)
    c.ok((px[..., 3] == 255).all(), f"{cid}: the label map is opaque")
    c.ok(2 <= len(colours) <= exp["labels"],
         f"{cid}: 2..{exp['labels']} flat label colours (got {len(colours)})")
    same_right = (px[:, 1:, :3] == px[:, :-1, :3]).all(-1).mean()
    c.ok(same_right >= 0.8, f"{cid}: flat regions ({same_right:.0%} of pixels have their right "
                            "neighbour's colour)")
    return px[..., :3]


def check_then_layout(c: Checker, work: Path, spec: dict, case: dict, rec: dict) -> None:
    """The layout edit after a label map and a painted box: the copy differs from the map
    exactly there, and the edit covers it."""
    cid, then = case["id"], rec["then"]
    exp = case["expect"]["then"]
    if not c.ok(then["status"] == exp["status"], f"{cid}: the layout edit's status "
                                                 f"{then['status']} ({then['message']})"):
        return
    source, target = (result_pixels(work, cid, next(d for d in rec["after"] if d["name"] == n))
                      for n in (SOURCE_LABELS, TARGET_LABELS))
    x0, y0, x1, y1 = case["then"]["paint"]["box"]
    painted = np.zeros(source.shape[:2], bool)
    painted[y0:y1, x0:x1] = True
    c.ok((target[painted] == then["painted"]).all() and
         np.array_equal(target[~painted], source[~painted]),
         f"{cid}: the copy is the map with the box painted in the picked colour {then['painted']}")
    marked = (source[..., :3] != target[..., :3]).any(-1)
    c.ok(marked.any(), f"{cid}: the picked label differs from the box's own")
    check_edit(c, work, spec, cid, exp, rec, then["before"], marked,
               input_layers(case["then"]["args"]))


def main(argv: list[str]) -> int:
    work = Path(argv[1])
    spec = json.loads((work / "cases.json").read_text())
    results_file = work / "results.json"
    c = Checker()
    if not c.ok(results_file.exists(), "GIMP wrote results.json"):
        return 1
    results = {r["id"]: r for r in json.loads(results_file.read_text())["cases"]}
    for case in spec["cases"]:
        cid, exp = case["id"], case["expect"]
        rec = results.get(cid)
        if not c.ok(rec is not None, f"{cid}: case ran"):
            continue
        if not c.ok(rec["status"] == exp["status"],
                    f"{cid}: status {rec['status']} (expected {exp['status']}; message: "
                    f"{rec.get('message')})"):
            continue
        if "label_map" in exp:
            after = rec["then"]["before"] if "then" in rec else rec["after"]
            check_label_map(c, work, spec, cid, exp["label_map"], rec["before"], after)
            if "then" in exp:
                check_then_layout(c, work, spec, case, rec)
        elif exp["status"] == "SUCCESS":
            check_success(c, work, spec, case, rec)
        else:
            msg = rec.get("message") or ""
            c.ok(exp["message"] in msg and "\n" not in msg.strip() and "Traceback" not in msg,
                 f"{cid}: one readable line containing {exp['message']!r} (got {msg!r})")
            c.ok(rec["before"] == rec["after"], f"{cid}: the image is untouched after the error")
        print(f"case {cid}: {rec['status']} in {rec['seconds']} s"
              + (f" - {rec['message']}" if rec.get("message") else ""))
    print(f"{c.passed} checks passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
