"""Draw the source and guide masks of the sample scenes and write samples/index.json.

Run from the repository root:  .venv/bin/python samples/make_masks.py [--preview DIR]

Each scene's object(s) are drawn by hand as polygons and ellipses, in the pixel coordinates
of the ORIGINAL scikit-image photo (so they can be read off that photo), then scaled to the
saved photo. Instances with refine=True get their outline snapped to the photo: pixels in a
thin band around the drawn outline are re-assigned to whichever side (object core or nearby
background) their colour is closer to, and the result is smoothed with a majority filter.

Guide masks follow MAGIC's semantics (see samples/README.md):
  move    = the other instances + the edited instance translated
  copy    = all instances + a translated copy of the edited instance
  reshape = the other instances + the edited instance scaled about its centroid
  remove  = the source mask without the removed instance (never empty: every scene has >= 2)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent

Shape = tuple  # ("poly", [(x, y), ...]) or ("ellipse", cx, cy, rx, ry), original-photo pixels


@dataclass(frozen=True)
class Instance:
    shapes: list[Shape]
    refine: bool = False
    band: int = 3  # half-width in saved-photo pixels of the band that refinement may change


@dataclass(frozen=True)
class Edits:
    move: tuple[str, float, float]  # instance, dx, dy (original-photo pixels)
    copy: tuple[str, float, float]
    reshape: tuple[str, float, float]  # instance, scale x, scale y
    remove: str  # instance


@dataclass(frozen=True)
class Scene:
    original_width: int
    instances: dict[str, Instance]
    edits: Edits
    licence: str
    origin: str
    description: dict[str, str] = field(default_factory=dict)


SKIMAGE = "scikit-image {ver} bundled sample data, skimage.data.{func}()"

SCENES: dict[str, Scene] = {
    "coffee": Scene(
        original_width=600,
        instances={
            "cup": Instance([("poly", [
                (172, 110), (180, 70), (205, 40), (245, 22), (290, 17), (335, 22), (375, 40),
                (400, 70), (408, 110), (402, 160), (385, 205), (360, 240), (330, 265),
                (300, 275), (262, 272), (258, 290), (240, 303), (210, 305), (196, 292),
                (197, 255), (210, 232), (195, 205), (180, 165)])]),
            "spoon": Instance([
                ("ellipse", 366, 285, 40, 42),
                ("poly", [(400, 75), (412, 66), (424, 72), (418, 110), (395, 180), (385, 225),
                          (378, 250), (360, 250), (372, 215), (383, 175), (398, 110)])]),
        },
        edits=Edits(move=("spoon", -230, -10), copy=("spoon", -230, -10),
                    reshape=("cup", 1.2, 1.0), remove="spoon"),
        licence="CC0 (photographer Rachel Michetti, courtesy of Pikolo Espresso Bar): "
                "'No copyright restrictions. CC0 by the photographer'",
        origin=SKIMAGE.format(ver="0.26.0", func="coffee") + ", downscaled to 512x341",
        description={"move": "spoon moved to the left of the saucer",
                     "copy": "a second spoon on the left of the saucer",
                     "reshape": "cup made 20% wider",
                     "remove": "spoon removed"},
    ),
    "chelsea": Scene(
        original_width=451,
        instances={
            "left_eye": Instance([("ellipse", 172, 116, 36, 30)], refine=True),
            "right_eye": Instance([("ellipse", 320, 137, 26, 27)], refine=True),
        },
        edits=Edits(move=("left_eye", -75, 70), copy=("left_eye", 73, -76),
                    reshape=("right_eye", 1.5, 1.5), remove="right_eye"),
        licence="CC0 (photographer Stefan van der Walt): "
                "'No copyright restrictions. CC0 by the photographer'",
        origin=SKIMAGE.format(ver="0.26.0", func="chelsea") + ", 451x300 (not rescaled)",
        description={"move": "left eye moved down onto the cheek",
                     "copy": "a third eye on the forehead",
                     "reshape": "right eye made 1.5x larger",
                     "remove": "right eye removed"},
    ),
    "astronaut": Scene(
        original_width=512,
        instances={
            "shuttle": Instance([("poly", [
                (405, 8), (418, 1), (430, 8), (436, 30), (436, 45), (441, 40), (447, 38),
                (452, 45), (456, 60), (457, 200), (462, 235), (460, 255), (440, 255),
                (425, 250), (410, 255), (380, 255), (365, 245), (355, 232), (362, 210),
                (377, 190), (378, 120), (382, 90), (390, 75), (388, 55), (384, 45), (388, 40),
                (393, 45), (398, 60), (399, 30)])]),
            "helmet": Instance([("poly", [
                (278, 470), (282, 430), (295, 400), (315, 375), (345, 355), (380, 345),
                (420, 344), (455, 352), (485, 372), (505, 400), (512, 420), (512, 512),
                (285, 512)])], refine=True),
        },
        edits=Edits(move=("shuttle", 40, 0), copy=("shuttle", -100, 0),
                    reshape=("shuttle", 0.75, 0.75), remove="helmet"),
        licence="Public domain (NASA, photograph of astronaut Eileen Collins): "
                "'No known copyright restrictions, released into the public domain'",
        origin=SKIMAGE.format(ver="0.26.0", func="astronaut") + ", 512x512 (not rescaled)",
        description={"move": "shuttle model moved 40 px right",
                     "copy": "a second shuttle model beside her head",
                     "reshape": "shuttle model shrunk to 75%",
                     "remove": "helmet removed"},
    ),
    "rocket": Scene(
        original_width=640,
        instances={
            "rocket": Instance([("poly", [
                (311, 145), (314, 135), (318, 129), (323, 127), (328, 129), (332, 135),
                (335, 145), (336, 180), (336, 405), (309, 405), (309, 180)])]),
            "left_tower": Instance([("poly", [
                (198, 122), (203, 122), (203, 190), (205, 190), (206, 427), (163, 427),
                (188, 190), (197, 190)])]),
            "right_tower": Instance([("poly", [
                (445, 122), (450, 122), (450, 190), (453, 190), (470, 427), (434, 427),
                (440, 190), (445, 190)])]),
        },
        edits=Edits(move=("rocket", -65, 0), copy=("rocket", 60, 0),
                    reshape=("rocket", 1.6, 1.0), remove="right_tower"),
        licence="Public domain (SpaceX launch photo of DSCOVR on Falcon 9, released into the "
                "public domain by SpaceX)",
        origin=SKIMAGE.format(ver="0.26.0", func="rocket") + ", downscaled to 512x342",
        description={"move": "rocket moved left, between the towers",
                     "copy": "a second rocket to the right",
                     "reshape": "rocket made 1.6x wider",
                     "remove": "right lightning tower removed"},
    ),
    "coins": Scene(
        original_width=384,
        instances={
            f"coin{i}": Instance([("ellipse", x, y, r, r)], refine=True, band=2)
            for i, (x, y, r) in enumerate([
                (44, 54, 22), (100, 55, 19), (155, 51, 23), (216, 51, 23), (275, 50, 20),
                (335, 43, 29), (45, 124, 20), (102, 126, 19), (153, 127, 19), (206, 124, 20),
                (271, 120, 25), (336, 124, 19), (44, 197, 18), (101, 195, 21), (154, 197, 19),
                (213, 193, 24), (273, 191, 23), (347, 184, 32), (47, 260, 27), (114, 266, 22),
                (172, 262, 27), (243, 264, 24), (300, 264, 25), (358, 269, 23)])
        },
        edits=Edits(move=("coin7", 0, 35), copy=("coin9", 0, 35),
                    reshape=("coin8", 1.35, 1.35), remove="coin10"),
        licence="No known copyright restrictions (Greek coins from Pompeii, Brooklyn Museum "
                "Collection, as stated by scikit-image)",
        origin=SKIMAGE.format(ver="0.26.0", func="coins")
        + ", 384x303 grayscale stored as RGB",
        description={"move": "a coin moved down between two rows",
                     "copy": "a coin copied into the gap below it",
                     "reshape": "a coin made 1.35x larger",
                     "remove": "a coin removed"},
    ),
    "hubble": Scene(
        original_width=1000,
        instances={
            f"galaxy{i}": Instance([("ellipse", x, y, rx, ry)], refine=True, band=2)
            for i, (x, y, rx, ry) in enumerate([
                (123, 401, 20, 20), (727, 472, 25, 25), (977, 489, 20, 20), (290, 110, 18, 18),
                (420, 404, 15, 15), (516, 438, 20, 12), (421, 716, 18, 18), (772, 738, 16, 16),
                (405, 73, 18, 12), (484, 65, 16, 14), (818, 166, 14, 9)])
        },
        edits=Edits(move=("galaxy0", 110, 120), copy=("galaxy1", -110, -170),
                    reshape=("galaxy0", 1.6, 1.6), remove="galaxy1"),
        licence="Public domain (NASA/ESA Hubble eXtreme Deep Field; NASA media guidelines: "
                "'may be freely used')",
        origin=SKIMAGE.format(ver="0.26.0", func="hubble_deep_field")
        + ", downscaled to 512x446",
        description={"move": "spiral galaxy moved to an empty patch of sky",
                     "copy": "the large elliptical galaxy copied up-left",
                     "reshape": "spiral galaxy made 1.6x larger",
                     "remove": "the large elliptical galaxy removed"},
    ),
}


def _scaled_shape(shape: Shape, s: float) -> Shape:
    if shape[0] == "poly":
        return ("poly", [(x * s, y * s) for x, y in shape[1]])
    _, cx, cy, rx, ry = shape
    return ("ellipse", cx * s, cy * s, rx * s, ry * s)


def draw(shapes: list[Shape], size: tuple[int, int], scale: float) -> np.ndarray:
    img = Image.new("L", size, 0)
    d = ImageDraw.Draw(img)
    for shape in shapes:
        shape = _scaled_shape(shape, scale)
        if shape[0] == "poly":
            d.polygon(shape[1], fill=255)
        else:
            _, cx, cy, rx, ry = shape
            d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(img) > 127


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.filter(ImageFilter.MaxFilter(2 * r + 1))) > 127


def _shrink(mask: np.ndarray, r: int) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.filter(ImageFilter.MinFilter(2 * r + 1))) > 127


def refine(mask: np.ndarray, photo: np.ndarray, band: int) -> np.ndarray:
    """Snap a hand-drawn outline to the photo by nearest-colour-model re-assignment in a band."""
    core = _shrink(mask, band)
    outer = _grow(mask, 2 * band) & ~_grow(mask, band)
    zone = _grow(mask, band) & ~core
    if core.sum() < 20 or outer.sum() < 20:
        return mask
    px = photo.astype(np.float64)
    candidates = px[zone]

    def loglik(ref: np.ndarray) -> np.ndarray:
        sample = px[ref]
        mu, var = sample.mean(0), sample.var(0) + 25.0
        return -0.5 * (((candidates - mu) ** 2) / var + np.log(var)).sum(1)

    out = mask.copy()
    out[zone] = loglik(core) > loglik(outer)
    img = Image.fromarray(out.astype(np.uint8) * 255).filter(ImageFilter.MedianFilter(5))
    return fill_holes(np.asarray(img) > 127)


def refine_in_box(mask: np.ndarray, photo: np.ndarray, band: int) -> np.ndarray:
    """refine() on the mask's bounding box plus a margin (same result, much less work)."""
    ys, xs = np.nonzero(mask)
    pad = 4 * band + 8
    y0, y1 = max(0, ys.min() - pad), min(mask.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(mask.shape[1], xs.max() + pad + 1)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = refine(mask[y0:y1, x0:x1], photo[y0:y1, x0:x1], band)
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels not connected to the image border become object (e.g. eye highlights)."""
    padded = Image.fromarray(np.pad(mask, 1).astype(np.uint8) * 255).copy()
    ImageDraw.floodfill(padded, (0, 0), 128)
    reached = np.asarray(padded)[1:-1, 1:-1] == 128
    return mask | ~reached


def _affine(mask: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    out = img.transform(img.size, Image.Transform.AFFINE, coeffs,
                        resample=Image.Resampling.NEAREST, fillcolor=0)
    return np.asarray(out) > 127


def translate(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return _affine(mask, (1, 0, -dx, 0, 1, -dy))


def scale_about_centroid(mask: np.ndarray, sx: float, sy: float) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    return _affine(mask, (1 / sx, 0, cx - cx / sx, 0, 1 / sy, cy - cy / sy))


def build_scene(scene: Scene, photo: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    h, w = photo.shape[:2]
    s = w / scene.original_width
    inst = {}
    for name, spec in scene.instances.items():
        m = draw(spec.shapes, (w, h), s)
        if spec.refine:
            m = refine_in_box(m, photo, spec.band)
        inst[name] = m

    def others(name: str) -> np.ndarray:
        rest = [m for n, m in inst.items() if n != name]
        return np.logical_or.reduce(rest) if rest else np.zeros((h, w), bool)

    source = np.logical_or.reduce(list(inst.values()))
    e = scene.edits
    n, dx, dy = e.move
    guides = {"move": others(n) | translate(inst[n], dx * s, dy * s)}
    n, dx, dy = e.copy
    guides["copy"] = source | translate(inst[n], dx * s, dy * s)
    n, sx, sy = e.reshape
    guides["reshape"] = others(n) | scale_about_centroid(inst[n], sx, sy)
    guides["remove"] = others(e.remove)
    return source, guides


def save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path, optimize=True)


def preview(photo: np.ndarray, source: np.ndarray, guides: dict[str, np.ndarray]) -> Image.Image:
    """Photo with the source mask tinted red, then each guide tinted green, side by side."""
    tiles = []
    for m, colour in [(source, (255, 0, 0))] + [(g, (0, 255, 0)) for g in guides.values()]:
        t = photo.astype(np.float32).copy()
        t[m] = 0.5 * t[m] + 0.5 * np.array(colour, np.float32)
        edge = m ^ _shrink(m, 1)
        t[edge] = (255, 255, 0)
        tiles.append(t.astype(np.uint8))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def write_composites(name: str, photo: np.ndarray, source: np.ndarray,
                     guides: dict[str, np.ndarray], out: Path) -> dict[str, str]:
    """What an artist's moved or scaled layer gives for each edit that pastes the object:
    the benchmark's cut-paste peer (benchmarks/peers.py)."""
    import sys

    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    import peers

    folder = out / "composites"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for mode in ("move", "copy", "reshape"):
        if mode in guides:
            rel = f"composites/{name}_{mode}.png"
            composite = peers.cut_paste(photo, source, guides[mode], mode)
            Image.fromarray(composite).save(out / rel, optimize=True)
            written[mode] = rel
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preview", type=Path, help="also write overlay previews to this folder")
    ap.add_argument("--out", type=Path, default=HERE,
                    help="where masks/ and index.json go (default: this folder)")
    args = ap.parse_args(argv)
    index: dict = {"default": "coffee", "scenes": {}}
    for name, scene in SCENES.items():
        photo = np.asarray(Image.open(HERE / f"{name}.png").convert("RGB"))
        source, guides = build_scene(scene, photo)
        mask_dir = args.out / "masks"
        mask_dir.mkdir(parents=True, exist_ok=True)
        save_mask(source, mask_dir / f"{name}_source.png")
        for mode, g in guides.items():
            save_mask(g, mask_dir / f"{name}_{mode}.png")
        index["scenes"][name] = {
            "image": f"{name}.png",
            "source_mask": f"masks/{name}_source.png",
            "guides": {mode: f"masks/{name}_{mode}.png" for mode in guides},
            "licence": scene.licence,
            "origin": scene.origin,
            "edits": scene.description,
            "composites": write_composites(name, photo, source, guides, args.out),
        }
        if args.preview:
            args.preview.mkdir(parents=True, exist_ok=True)
            preview(photo, source, guides).save(args.preview / f"{name}.png")
        print(f"{name}: source {source.mean():.1%} of the photo, "
              + ", ".join(f"{m} {g.mean():.1%}" for m, g in guides.items()))
    # the layout-edit label maps are make_label_maps.py's: kept as they are
    committed = HERE / "index.json"
    if committed.is_file():
        before = json.loads(committed.read_text(encoding="utf-8"))["scenes"]
        for name, entry in index["scenes"].items():
            if "layouts" in before.get(name, {}):
                entry["layouts"] = before[name]["layouts"]
    (args.out / "index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
