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
    h, w = shape
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
    meta = spec["layers"][desc["layer"]]
    rgba = np.asarray(Image.open(work / meta["file"]).convert("RGBA"))
    if desc["rule"] == "alpha":
        m = rgba[..., 3] >= 128
    else:
        m = np.asarray(Image.open(work / meta["file"]).convert("L")) >= 128
    ox, oy = meta["offset"]
    mh, mw = m.shape
    ys, xs = slice(max(0, oy), min(h, oy + mh)), slice(max(0, ox), min(w, ox + mw))
    out[ys, xs] = m[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox]
    return out


def check_success(c: Checker, work: Path, spec: dict, case: dict, rec: dict) -> None:
    cid, exp = case["id"], case["expect"]
    photo = np.asarray(Image.open(work / spec["photo"]).convert("RGB"))
    h, w = photo.shape[:2]
    bx, by = spec["base_offset"]
    source = expected_mask(work, spec, exp["source"], (h, w))
    guide = expected_mask(work, spec, exp["guide"], (h, w))
    if exp.get("whole"):
        area = np.ones((h, w), bool)
    else:
        area = dilate(source | guide, blend_margin(w, h))
    ys, xs = np.nonzero(area)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1

    before, after = rec["before"], rec["after"]
    group_name = f"MAGIC {exp['mode']}"
    names = [f"MAGIC {exp['mode']} seed {s}" for s in exp["seeds"]]
    top = [d for d in after if d["parent"] is None]
    groups = [d for d in top if d["group"]]
    c.ok(len(groups) == 1 and groups[0]["name"] == group_name,
         f"{cid}: one new layer group named {group_name!r} (got {[g['name'] for g in groups]})")
    base_before = next(d for d in before if d["name"] == "photo")
    base_after = next(d for d in after if d["name"] == "photo")
    if groups:
        c.ok(groups[0]["index"] == base_before["index"] and
             base_after["index"] == base_before["index"] + 1,
             f"{cid}: the group sits directly above the active layer")
    children = [d for d in after if d["parent"] == group_name]
    c.ok([d["name"] for d in children] == names,
         f"{cid}: result layers {names} (got {[d['name'] for d in children]})")
    # Nothing else in the image changed: same layers, offsets, sizes and pixels.
    strip = [{k: v for k, v in d.items() if k != "index"} for d in before]
    kept = [{k: v for k, v in d.items() if k != "index"} for d in after
            if d["parent"] is None and not d["group"]]
    c.ok(strip == kept, f"{cid}: the other layers are unchanged (names, offsets, pixels)")
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
        if exp["status"] == "SUCCESS":
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
