"""Write the end-to-end test's inputs: a photo, mask layers and the cases GIMP should run.

All geometry lives here (photo-local coordinates); check.py reads the same cases.json and
computes what GIMP must have produced with numpy, independently of the plug-in's own mask code.
Usage: python make_inputs.py WORK_DIR CLOSED_PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_W, PHOTO_H = 96, 64
CANVAS = (104, 72)
BASE_OFFSET = (4, 4)  # the photo layer sits inside a larger canvas: offsets must be honoured
OBJ_A = (16, 20, 36, 40)  # x0, y0, x1, y1 (exclusive), photo-local
OBJ_B = (70, 8, 84, 22)


def photo() -> np.ndarray:
    y, x = np.mgrid[0:PHOTO_H, 0:PHOTO_W]
    img = np.stack([x * 2 + 40, y * 3 + 30, 180 - x], axis=-1).astype(np.uint8)
    ax0, ay0, ax1, ay1 = OBJ_A
    img[ay0:ay1, ax0:ax1] = (220, 30, 30)
    bx0, by0, bx1, by1 = OBJ_B
    img[by0:by1, bx0:bx1] = (30, 30, 220)
    return img


def layers(img: np.ndarray) -> dict[str, dict]:
    """name -> {file, offset (photo-local), mask_rule, object rects (photo-local)}."""
    out = {}
    # Opaque black/white layer smaller than the photo, offset: white = object (luminance rule).
    bw = np.zeros((40, 40), np.uint8)
    bw[10:30, 10:30] = 255
    out["source-bw"] = {"pixels": np.stack([bw] * 3, -1), "offset": (6, 10)}
    # Transparent layer with an opaque dark blob: opaque = object (alpha rule).
    ga = np.zeros((30, 30, 4), np.uint8)
    ga[5:25, 5:25] = (10, 80, 10, 255)
    out["guide-alpha"] = {"pixels": ga, "offset": (50, 24)}
    # The object copied to its own layer and moved (fully opaque copy of its pixels).
    ax0, ay0, ax1, ay1 = OBJ_A
    obj = np.concatenate([img[ay0:ay1, ax0:ax1], np.full((20, 20, 1), 255, np.uint8)], -1)
    out["moved"] = {"pixels": obj, "offset": (60, 30)}
    # Same object moved so far right that part of it hangs off the photo (cropped).
    out["moved-edge"] = {"pixels": obj, "offset": (86, 40)}
    # Both objects in white on black, the size of the photo (remove case).
    both = np.zeros((PHOTO_H, PHOTO_W), np.uint8)
    both[ay0:ay1, ax0:ax1] = 255
    bx0, by0, bx1, by1 = OBJ_B
    both[by0:by1, bx0:bx1] = 255
    out["objects"] = {"pixels": np.stack([both] * 3, -1), "offset": (0, 0)}
    # A mask layer that marks nothing (all black, opaque).
    out["empty"] = {"pixels": np.zeros((20, 20, 3), np.uint8), "offset": (0, 0)}
    # Label maps, flat colours as GIMP's pencil paints them: the photo's (the canvas' size,
    # offset: cropped to the photo), the wanted one (a second red object), one painted with a
    # colour the photo's map lacks, and one too small to cover the photo.
    labels = label_map()
    canvas = np.zeros((CANVAS[1], CANVAS[0], 3), np.uint8)
    canvas[:] = LABEL_BACKGROUND
    bx, by = BASE_OFFSET
    canvas[by:by + PHOTO_H, bx:bx + PHOTO_W] = labels
    out["labels-source"] = {"pixels": canvas, "offset": (-bx, -by)}
    out["labels-target"] = {"pixels": painted(labels, NEW_OBJECT, LABEL_A), "offset": (0, 0)}
    out["labels-foreign"] = {"pixels": painted(labels, FOREIGN_PATCH, FOREIGN), "offset": (0, 0)}
    out["labels-small"] = {"pixels": labels[:40, :40].copy(), "offset": (0, 0)}
    return out


LABEL_BACKGROUND, LABEL_A, LABEL_B = (40, 160, 40), (220, 30, 30), (30, 30, 220)
NEW_OBJECT = (50, 36, 66, 52)  # where the target map wants a second object A
FOREIGN_PATCH, FOREIGN = (50, 36, 58, 44), (250, 250, 0)  # #fafa00: no label of the photo
PAINT_AT = (56, 40, 72, 56)  # label-map-then-layout: a box painted with object A's label
PICK_AT = (26, 30)  # inside object A: where that label colour is picked


def label_map() -> np.ndarray:
    """The photo's label map: background, object A, object B."""
    out = np.zeros((PHOTO_H, PHOTO_W, 3), np.uint8)
    out[:] = LABEL_BACKGROUND
    for (x0, y0, x1, y1), colour in ((OBJ_A, LABEL_A), (OBJ_B, LABEL_B)):
        out[y0:y1, x0:x1] = colour
    return out


def painted(labels: np.ndarray, box: tuple[int, int, int, int], colour) -> np.ndarray:
    out = labels.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = colour
    return out


def cases(closed_port: int) -> list[dict]:
    fast = {"preset": "tiny", "iterations": 2, "resolution": 32}
    sel_a = list(OBJ_A)
    return [
        {"id": "synthesize", "procedure": "python-fu-magic-synthesize", "selection": None,
         "args": {"source-mask": "source-bw", "guide-mask": "guide-alpha", "mode": "reshape",
                  "samples": 2, "seed": 7, **fast},
         "expect": {"status": "SUCCESS", "mode": "reshape", "seeds": [7, 8],
                    "source": {"layer": "source-bw", "rule": "luma"},
                    "guide": {"layer": "guide-alpha", "rule": "alpha"}}},
        {"id": "move", "procedure": "python-fu-magic-move-object", "selection": sel_a,
         "args": {"moved-layer": "moved", "samples": 1, "seed": 3, **fast},
         "expect": {"status": "SUCCESS", "mode": "move", "seeds": [3],
                    "source": {"rect": sel_a}, "guide": {"layer": "moved", "rule": "alpha"}}},
        {"id": "copy", "procedure": "python-fu-magic-copy-object", "selection": sel_a,
         "args": {"moved-layer": "moved-edge", "samples": 1, "seed": 5,
                  "seed-from-layer": False, **fast},
         "expect": {"status": "SUCCESS", "mode": "copy", "seeds": [5],
                    "source": {"rect": sel_a},
                    "guide": {"union": [{"rect": sel_a}, {"layer": "moved-edge",
                                                          "rule": "alpha"}]}}},
        {"id": "remove", "procedure": "python-fu-magic-remove-object", "selection": sel_a,
         "args": {"source-mask": "objects", "samples": 1, "seed": 11, "region": "whole-image",
                  **fast},
         "expect": {"status": "SUCCESS", "mode": "remove", "seeds": [11], "whole": True,
                    "source": {"layer": "objects", "rule": "luma"},
                    "guide": {"rect": list(OBJ_B)}}},
        # The selected object is the only one (no source-mask layer): the guide is empty.
        {"id": "remove-only", "procedure": "python-fu-magic-remove-object", "selection": sel_a,
         "args": {"samples": 1, "seed": 13, **fast},
         "expect": {"status": "SUCCESS", "mode": "remove", "seeds": [13],
                    "source": {"rect": sel_a}, "guide": {"union": []}, "changed": sel_a}},
        {"id": "empty-source-layer", "procedure": "python-fu-magic-synthesize", "selection": None,
         "args": {"source-mask": "empty", "guide-mask": "guide-alpha", **fast},
         "expect": {"status": "EXECUTION_ERROR", "message": "marks nothing"}},
        {"id": "no-selection", "procedure": "python-fu-magic-move-object", "selection": None,
         "args": {"moved-layer": "moved", **fast},
         "expect": {"status": "EXECUTION_ERROR", "message": "source mask is empty"}},
        {"id": "server-down", "procedure": "python-fu-magic-move-object", "selection": sel_a,
         "args": {"moved-layer": "moved", "server-address": f"tcp://127.0.0.1:{closed_port}",
                  **fast},
         "expect": {"status": "EXECUTION_ERROR", "message": "magic-server --bind"}},
        {"id": "too-large", "procedure": "python-fu-magic-move-object", "selection": sel_a,
         "big": True, "args": {"moved-layer": "moved", **fast},
         "expect": {"status": "EXECUTION_ERROR", "message": "too large"}},
        # Layout edit from two painted label maps: the result covers where they differ.
        {"id": "layout", "procedure": "python-fu-magic-layout", "selection": None,
         "args": {"source-labels": "labels-source", "target-labels": "labels-target",
                  "samples": 1, "seed": 17, **fast},
         "expect": {"status": "SUCCESS", "mode": "layout", "seeds": [17],
                    "source": {"differ": ["labels-source", "labels-target"]},
                    "guide": {"differ": ["labels-source", "labels-target"]}}},
        {"id": "layout-foreign-colour", "procedure": "python-fu-magic-layout", "selection": None,
         "args": {"source-labels": "labels-source", "target-labels": "labels-foreign", **fast},
         "expect": {"status": "EXECUTION_ERROR",
                    "message": "uses #fafa00, which is not a label colour of the source map"}},
        {"id": "layout-small-labels", "procedure": "python-fu-magic-layout", "selection": None,
         "args": {"source-labels": "labels-source", "target-labels": "labels-small", **fast},
         "expect": {"status": "EXECUTION_ERROR", "message": "does not cover the photo layer"}},
        # The artist's whole way: a first label map of the photo (two layers of flat colours
        # above it), object A's label painted elsewhere on the copy (picked inside object A),
        # then a layout edit with the two new layers.
        {"id": "label-map-then-layout", "procedure": "python-fu-magic-label-map",
         "selection": None, "args": {"labels": 3, "seed": 1},
         "then": {"paint": {"layer": "MAGIC target labels (paint here)", "pick": list(PICK_AT),
                            "box": list(PAINT_AT)},
                  "procedure": "python-fu-magic-layout",
                  "args": {"source-labels": "@MAGIC source labels",
                           "target-labels": "@MAGIC target labels (paint here)",
                           "samples": 1, "seed": 19, **fast}},
         "expect": {"status": "SUCCESS", "label_map": {"labels": 3},
                    "then": {"status": "SUCCESS", "mode": "layout", "seeds": [19]}}},
    ]


def main(argv: list[str]) -> int:
    work, closed_port = Path(argv[1]), int(argv[2])
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    img = photo()
    Image.fromarray(img).save(work / "inputs" / "photo.png")
    big = np.full((100, 120, 3), 128, np.uint8)  # 12,000 px: over the server's --max-pixels
    Image.fromarray(big).save(work / "inputs" / "big.png")
    meta = {}
    for name, d in layers(img).items():
        Image.fromarray(d["pixels"]).save(work / "inputs" / f"{name}.png")
        meta[name] = {"file": f"inputs/{name}.png", "offset": list(d["offset"]),
                      "size": [d["pixels"].shape[1], d["pixels"].shape[0]],
                      # label maps go only into the cases that use them (fewer loads)
                      "when_used": name.startswith("labels-")}
    spec = {"canvas": list(CANVAS), "base_offset": list(BASE_OFFSET), "photo": "inputs/photo.png",
            "big": "inputs/big.png", "layers": meta, "cases": cases(closed_port)}
    (work / "cases.json").write_text(json.dumps(spec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
