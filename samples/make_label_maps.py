"""Draw the layout-edit label maps of the sample scenes and list them in samples/index.json.

Run from the repository root:  .venv/bin/python samples/make_label_maps.py [--preview DIR]

Each scene's source map starts as magic_server.labels.clustering.first_label_map of the photo
(what `magic-label-map` gives an artist), then is tidied here the way an artist would touch it
up: its clusters are named by their colour, objects the clustering cannot separate (a spoon, a
coin's outline) are taken from the scene's hand-drawn instances in make_masks.py, and specks
are merged. Each scene gets three target maps, painted programmatically:

  rearrange  a label region moved (its old place painted with the labels around it)
  paint      more of a concept: a new blob of an existing label
  remove     an object painted with the labels around it

Maps are flat-colour RGB PNGs in the label palette (samples/labels/<scene>_<map>.png); every
other key of index.json is kept (make_masks.py writes those, and keeps "layouts" in turn).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import make_masks

from magic_server.engine.components import connected_regions
from magic_server.labels.clustering import colour_map, first_label_map, label_palette
from magic_server.labels.regions import merge_specks

MAPS = ("rearrange", "paint", "remove")


# ---------------------------------------------------------------------------- helpers


def instance(scene: str, name: str, photo: np.ndarray) -> np.ndarray:
    """A hand-drawn instance of make_masks.py, as its masks have it (snapped when it says)."""
    spec = make_masks.SCENES[scene]
    h, w = photo.shape[:2]
    inst = spec.instances[name]
    mask = make_masks.draw(inst.shapes, (w, h), w / spec.original_width)
    if inst.refine:
        mask = make_masks.refine_in_box(mask, photo, inst.band)
    return mask


def fill_from_around(labels: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The hole painted with the labels around it: grown in from its edge, one pixel ring at a
    time, each pixel taking the most common label among its known 8 neighbours."""
    out = labels.copy()
    unknown = hole.copy()
    h, w = labels.shape
    count = int(labels.max()) + 1
    while unknown.any():
        votes = np.zeros((count, h, w), np.int32)
        known = np.pad(~unknown, 1)
        padded = np.pad(out, 1)
        for dy in range(3):
            for dx in range(3):
                k = known[dy:dy + h, dx:dx + w]
                lab = padded[dy:dy + h, dx:dx + w]
                for c in range(count):
                    votes[c] += k & (lab == c)
        ring = unknown & (votes.sum(0) > 0)
        if not ring.any():
            break
        out[ring] = votes.argmax(0)[ring]
        unknown &= ~ring
    return out


def disc(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    img = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(img).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(img) > 127


def largest_region(mask: np.ndarray) -> np.ndarray:
    regions, _ = connected_regions(mask.astype(np.uint8))
    sizes = np.bincount(regions[mask], minlength=int(regions.max()) + 1)
    return mask & (regions == sizes.argmax()) if mask.any() else mask


def by_area(source: np.ndarray) -> np.ndarray:
    """The relabelling that makes 0 the source's largest label, and so on (the palette's
    first colours go to the biggest regions, as first_label_map orders them)."""
    counts = np.bincount(source.ravel())
    order = np.argsort(-counts, kind="stable")
    remap = np.zeros(len(counts), np.uint8)
    remap[order] = np.arange(len(order), dtype=np.uint8)
    return remap


def cluster_means(photo: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([photo[labels == k].mean(0) for k in range(int(labels.max()) + 1)])


# ---------------------------------------------------------------------------- the scenes


@dataclass(frozen=True)
class LayoutScene:
    source: Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
    targets: dict[str, Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]]
    edits: dict[str, str]
    labels: dict[str, str]  # label name: what it covers, in the order of the label indices


# coffee: labels by name, before the final relabelling by area
TABLE, CERAMIC, PORCELAIN, CREMA, SPOON = range(5)


# the saucer's rim, read off the saved 512 px photo (snapped to it like make_masks' eyes)
SAUCER = [(90, 95), (120, 72), (150, 62), (180, 57), (330, 62), (360, 72), (385, 88),
          (402, 115), (410, 150), (410, 200), (400, 245), (382, 275), (355, 300), (320, 318),
          (280, 330), (235, 334), (190, 328), (145, 312), (110, 290), (85, 265), (70, 235),
          (65, 200), (66, 160), (75, 125)]

CUP_OPENING = (248, 95, 103, 82)  # the rim's ellipse: centre x, y, radii
CREMA_OUTLINE = (247, 123, 73, 41)


def coffee_source(photo: np.ndarray) -> tuple[np.ndarray, dict]:
    """The cup's clusters named by colour: near white is porcelain, deep red or dark is the
    ceramic outside. The outlines of the saucer, the cup, the coffee and the spoon are drawn
    by hand (snapped to the photo): the clusters put the saucer's lit rim with the wood and
    the cup's shaded inside wall with the coffee."""
    base = first_label_map(photo, 8, seed=0)
    means = cluster_means(photo, base)
    white = (means.sum(1) > 550)[base]
    red_or_dark = ((means[:, 1] < 0.35 * means[:, 0]) | (means.sum(1) < 120))[base]
    saucer = make_masks.refine_in_box(make_masks.draw([("poly", SAUCER)], photo.shape[1::-1], 1),
                                      photo, 4)
    cup = instance("coffee", "cup", photo)
    labels = np.full(base.shape, TABLE, np.uint8)
    labels[saucer] = CERAMIC
    opening = cup & disc(base.shape, *CUP_OPENING)
    near_rim = cup & make_masks._grow(opening, 6)
    labels[cup] = CERAMIC  # the outside of the cup, its highlights included
    labels[(opening & ~red_or_dark) | (near_rim & white)] = PORCELAIN
    labels[make_masks.refine_in_box(disc(base.shape, *CREMA_OUTLINE), photo, 4)] = CREMA
    labels = merge_specks(labels, round(0.003 * labels.size))
    for name, other in ((CREMA, PORCELAIN), (PORCELAIN, CERAMIC)):  # one region each
        mine = labels == name
        labels[mine & ~largest_region(mine)] = other
    spoon = instance("coffee", "spoon", photo)
    labels[spoon] = SPOON
    return labels, {"spoon": spoon}


def coffee_rearrange(source: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    spoon = parts["spoon"]
    target = fill_from_around(source, spoon)
    target[make_masks.translate(spoon, 112, 4)] = SPOON
    return target


def coffee_paint(source: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    # a spill of coffee on the saucer, left of the cup (only where the saucer is)
    target = source.copy()
    spill = disc(source.shape, 125, 238, 30, 15) & (source == CERAMIC)
    target[spill] = CREMA
    return target


def coffee_remove(source: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    return fill_from_around(source, parts["spoon"])


BACKGROUND, COIN = 0, 1


def coins_source(photo: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    base = first_label_map(photo, 2, seed=0)
    bright = int(np.argmax(cluster_means(photo, base).sum(1)))
    coins = {n: instance("coins", n, photo) for n in make_masks.SCENES["coins"].instances}
    any_coin = np.logical_or.reduce(list(coins.values()))
    labels = np.full(base.shape, BACKGROUND, np.uint8)
    # the clustering's coins, without the bright strip of cloth at the top it also finds,
    # and with each coin's outline where the hand-drawn (snapped) instance has it
    labels[(base == bright) & make_masks._grow(any_coin, 2)] = COIN
    labels[any_coin] = COIN
    labels = merge_specks(labels, round(0.002 * labels.size))
    # each coin as the source map has it: its whole region, not only the drawn disc
    regions, _ = connected_regions(labels)
    whole = {}
    for name, disc_mask in coins.items():
        ids = np.unique(regions[disc_mask & (labels == COIN)])
        whole[name] = np.isin(regions, ids) & (labels == COIN)
    return labels, whole


def coins_rearrange(source: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    # the big coin at the right of the third row and its smaller left neighbour swap places
    big, small = parts["coin17"], parts["coin16"]
    target = source.copy()
    target[big | small] = BACKGROUND
    target[make_masks.translate(big, -74, 7)] = COIN
    target[make_masks.translate(small, 74, -7)] = COIN
    return target


def coins_paint(source: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    # a new small coin in the space between the first two coins of the first two rows
    target = source.copy()
    target[disc(source.shape, 128, 89, 16, 16)] = COIN
    return target


def coins_remove(source: np.ndarray, parts: dict[str, np.ndarray]) -> np.ndarray:
    target = source.copy()
    target[parts["coin10"]] = BACKGROUND
    return target


LAYOUTS: dict[str, LayoutScene] = {
    "coffee": LayoutScene(
        coffee_source,
        {"rearrange": coffee_rearrange, "paint": coffee_paint, "remove": coffee_remove},
        {"rearrange": "spoon moved off the saucer onto the table, right of it (its old "
                      "place: saucer and cup)",
         "paint": "a coffee spill painted on the saucer, left of the cup",
         "remove": "spoon painted over with the saucer and cup around it"},
        {"table": "the wooden table", "ceramic": "the red saucer and the cup's outside",
         "porcelain": "the cup's white inside wall and rim",
         "crema": "the coffee in the cup", "spoon": "the spoon"},
    ),
    "coins": LayoutScene(
        coins_source,
        {"rearrange": coins_rearrange, "paint": coins_paint, "remove": coins_remove},
        {"rearrange": "the big coin at the right of the third row swapped with its smaller "
                      "left neighbour",
         "paint": "a new small coin painted into the space between four coins (top left)",
         "remove": "a coin of the second row painted over with the cloth"},
        {"cloth": "the dark cloth", "coin": "the coins"},
    ),
}


def build(name: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """(source, {target name: map}, {label name: its colour as #rrggbb})."""
    photo = np.asarray(Image.open(HERE / f"{name}.png").convert("RGB"))
    scene = LAYOUTS[name]
    source, parts = scene.source(photo)
    targets = {m: scene.targets[m](source, parts) for m in MAPS}
    remap = by_area(source)
    palette = label_palette(len(remap))
    colours = {label: "#" + "".join(f"{int(c):02x}" for c in palette[remap[k]])
               for k, label in enumerate(scene.labels)}
    return remap[source], {m: remap[t] for m, t in targets.items()}, colours


def layout_entry(name: str, colours: dict[str, str]) -> dict:
    return {"source": f"labels/{name}_source.png",
            "targets": {m: f"labels/{name}_{m}.png" for m in MAPS},
            "edits": dict(LAYOUTS[name].edits),
            "labels": {label: f"{colours[label]}: {what}"
                       for label, what in LAYOUTS[name].labels.items()}}


def save_map(indices: np.ndarray, count: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colour_map(indices, label_palette(count))).save(path, optimize=True)


def preview(photo: np.ndarray, source: np.ndarray, targets: dict[str, np.ndarray],
            count: int) -> Image.Image:
    """Photo, then source and targets half over the photo, side by side."""
    pal = label_palette(count)
    tiles = [photo] + [(0.35 * photo + 0.65 * colour_map(m, pal)).astype(np.uint8)
                       for m in (source, *targets.values())]
    return Image.fromarray(np.concatenate(tiles, axis=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE,
                    help="where labels/ and index.json go (default: this folder)")
    ap.add_argument("--preview", type=Path, help="also write overlay previews to this folder")
    args = ap.parse_args(argv)
    index = json.loads((HERE / "index.json").read_text(encoding="utf-8"))
    for name in LAYOUTS:
        source, targets, colours = build(name)
        count = int(max(source.max(), *(t.max() for t in targets.values()))) + 1
        save_map(source, count, args.out / f"labels/{name}_source.png")
        for m, t in targets.items():
            save_map(t, count, args.out / f"labels/{name}_{m}.png")
        index["scenes"][name]["layouts"] = layout_entry(name, colours)
        if args.preview:
            args.preview.mkdir(parents=True, exist_ok=True)
            photo = np.asarray(Image.open(HERE / f"{name}.png").convert("RGB"))
            preview(photo, source, targets, count).save(args.preview / f"{name}.png")
        changed = ", ".join(f"{m} {np.mean(t != source):.1%}" for m, t in targets.items())
        print(f"{name}: {count} labels; changed pixels: {changed}")
    (args.out / "index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
