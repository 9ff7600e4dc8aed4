"""Full-size scenes for the benchmark (issue 17): photographs at their own resolution.

    python benchmarks/fullsize.py fetch [--cache DIR] [--deb FILE]   # fetch the photos once
    python benchmarks/fullsize.py show [--cache DIR] [--out DIR]     # masks drawn on the photos

The photographs are Debian's `mate-backgrounds` (GPL-2+), fetched at benchmark time with
`apt-get download mate-backgrounds` and unpacked with `dpkg-deb -x` into a cache folder outside
the repository (default ~/.cache/magic-for-gimp/fullsize, or $MAGIC_FULLSIZE_CACHE); nothing of
it is committed. samples/fullsize.json holds each scene's object as a polygon in the photo's
pixels, the edits derived from it (a translation for move and copy, a scaling about the
object's centroid for reshape, no guide for remove), their known transforms, and the licence.

The MAGIC paper's hummingbird example (2464x1577) comes from the paper's repository
(github.com/mozhdehrouhsedaghat/magic): give its folder (a clone, or any folder holding
input_images/hummingbird.jpg and labels/gt_hummingbird.jpg, labels/target_hummingbird.jpg, or
the three files side by side) with --hummingbird PATH or $MAGIC_HUMMINGBIRD; without it the
scene is skipped with a message. Its masks (624x399) are scaled to the photo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scene import Scene

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "samples" / "fullsize.json"
HELD_BACK = ("LadyBird.jpg", "Aqua.jpg")  # for an independent check: never used here
HUMMINGBIRD = "hummingbird"


class FullsizeError(Exception):
    """The full-size scenes are not available (no apt-get, no cache...): one user-facing line."""


def default_cache() -> Path:
    env = os.environ.get("MAGIC_FULLSIZE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "magic-for-gimp" / "fullsize"


def spec() -> dict:
    return json.loads(SPEC.read_text(encoding="utf-8"))


def _deb_version(deb: Path) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def fetch(cache: Path | None = None, deb: Path | None = None, log=print) -> Path:
    """The unpacked package folder in the cache (fetched and unpacked when missing): the
    folder holding usr/share/backgrounds/mate/. `deb`: an already downloaded .deb."""
    cache = cache or default_cache()
    pkg = spec()["package"]
    unpacked = cache / "mate-backgrounds"
    photos = unpacked / pkg["folder"]
    if photos.is_dir() and (unpacked / "VERSION").is_file():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    for tool in ("dpkg-deb",) + (() if deb else ("apt-get",)):
        if shutil.which(tool) is None:
            raise FullsizeError(f"{tool} is not available: the full-size scenes need Debian's "
                                f"package tools (or give the .deb with --deb on a machine with "
                                f"dpkg-deb)")
    if deb is None:
        log(f"fetching {pkg['name']} with apt-get download into {cache}")
        want = f"{pkg['name']}={pkg['version']}"
        got = subprocess.run(["apt-get", "download", want], cwd=cache, check=False,
                             capture_output=True, text=True)
        if got.returncode != 0:  # that exact version is gone: any version, said in the report
            log(f"  {want} not available ({got.stderr.strip().splitlines()[-1:]}); "
                f"taking the archive's version")
            got = subprocess.run(["apt-get", "download", pkg["name"]], cwd=cache, check=False,
                                 capture_output=True, text=True)
        if got.returncode != 0:
            raise FullsizeError(f"apt-get download {pkg['name']} failed: "
                                f"{got.stderr.strip()[-300:]} (run `apt-get update` first?)")
        debs = sorted(cache.glob(f"{pkg['name']}_*.deb"), key=lambda p: p.stat().st_mtime)
        if not debs:
            raise FullsizeError(f"apt-get download left no {pkg['name']}_*.deb in {cache}")
        deb = debs[-1]
    version = _deb_version(deb)
    tmp = cache / "mate-backgrounds.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    (tmp / "VERSION").write_text(version + "\n", encoding="utf-8")
    shutil.rmtree(unpacked, ignore_errors=True)
    tmp.rename(unpacked)
    log(f"unpacked {deb.name} (version {version}) into {unpacked}")
    return unpacked


# ---------------------------------------------------------------------------- masks and edits


def polygon_mask(points: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """bool HxW: the polygon (x, y points in pixel coordinates) filled, its outline included."""
    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in points], fill=255, outline=255)
    return np.asarray(im) > 0


def shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """mask moved by (dy, dx); what leaves the image is lost."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def edits_from_polygon(points: list[list[float]], shape: tuple[int, int],
                       offset: tuple[int, int], scale: float):
    """(source, guides, transforms) for move, copy, reshape and remove from one polygon."""
    source = polygon_mask(points, shape)
    dy, dx = (int(v) for v in offset)
    moved = shifted(source, dy, dx)
    ys, xs = np.nonzero(source)
    cy, cx = float(ys.mean()), float(xs.mean())
    scaled = [[cx + scale * (x - cx), cy + scale * (y - cy)] for x, y in points]
    guides = {"move": moved, "copy": source | moved, "reshape": polygon_mask(scaled, shape),
              "remove": np.zeros_like(source)}
    t = (1.0, 1.0, float(dy), float(dx))
    transforms = {"move": t, "copy": t,
                  "reshape": (scale, scale, cy * (1 - scale), cx * (1 - scale))}
    return source, guides, transforms


def load_photo_scene(name: str, unpacked: Path) -> Scene:
    s = spec()
    pkg, entry = s["package"], s["scenes"][name]
    if entry["file"] in HELD_BACK:
        raise FullsizeError(f"{entry['file']} is held back for an independent check")
    path = unpacked / pkg["folder"] / entry["file"]
    if not path.is_file():
        raise FullsizeError(f"{path} is missing: fetch the photos again "
                            f"(python benchmarks/fullsize.py fetch)")
    image = np.array(Image.open(path).convert("RGB"))
    if list(image.shape[1::-1]) != entry["size"]:
        raise FullsizeError(f"{entry['file']} is {image.shape[1]}x{image.shape[0]}, "
                            f"samples/fullsize.json expects {entry['size'][0]}x{entry['size'][1]}")
    version = (unpacked / "VERSION").read_text(encoding="utf-8").strip()
    source, guides, transforms = edits_from_polygon(entry["polygon"], image.shape[:2],
                                                    entry["move_offset"],
                                                    entry["reshape_scale"])
    licence = (f"GPL-2+, {entry['copyright']}; Debian package {pkg['name']} {version}, "
               f"{pkg['folder']}/{entry['file']}")
    return Scene(name, image, source, guides, licence, entry["edits"], transforms,
                     f"{entry['file']} ({image.shape[1]}x{image.shape[0]}): {entry['object']}")


def _find(root: Path, rel: str) -> Path | None:
    for p in (root / rel, root / Path(rel).name):
        if p.is_file():
            return p
    return None


def hummingbird_path(arg: str | Path | None) -> Path | None:
    value = arg or os.environ.get("MAGIC_HUMMINGBIRD")
    return Path(value).expanduser() if value else None


def load_hummingbird(root: Path) -> Scene:
    h = spec()["hummingbird"]
    files = {k: _find(root, rel) for k, rel in h["files"].items()}
    missing = [h["files"][k] for k, p in files.items() if p is None]
    if missing:
        raise FullsizeError(f"the hummingbird example is not in {root} (missing "
                            f"{', '.join(missing)})")
    image = np.array(Image.open(files["image"]).convert("RGB"))
    size = (image.shape[1], image.shape[0])

    def mask(p: Path) -> np.ndarray:
        im = Image.open(p).convert("L").resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im) > 127

    source, guide = mask(files["source_mask"]), mask(files["guide"])
    (sy0, sx0), (sy1, sx1) = np.argwhere(source).min(0), np.argwhere(source).max(0)
    (gy0, gx0), (gy1, gx1) = np.argwhere(guide).min(0), np.argwhere(guide).max(0)
    # the guide is the source mask moved: the translation between the boxes' centres
    t = (1.0, 1.0, float((gy0 + gy1 - sy0 - sy1) / 2), float((gx0 + gx1 - sx0 - sx1) / 2))
    return Scene(HUMMINGBIRD, image, source, {"move": guide}, h["licence"], h["edits"],
                     {"move": t}, h["source"])


def scene_names() -> list[str]:
    return [*spec()["scenes"], HUMMINGBIRD]


def load_scenes(names: list[str] | None = None, *, cache: Path | None = None,
                deb: Path | None = None, hummingbird: str | Path | None = None,
                log=print) -> list[Scene]:
    """The full-size scenes (all by default), fetching the photos when needed. The hummingbird
    is skipped, with a message, when its folder is not given or does not hold it."""
    available = scene_names()
    names = names or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise FullsizeError(f"unknown full-size scene(s) {', '.join(unknown)}; choose from "
                            f"{', '.join(available)}")
    out = []
    photos = [n for n in names if n != HUMMINGBIRD]
    unpacked = fetch(cache, deb, log) if photos else None
    for n in names:
        if n != HUMMINGBIRD:
            out.append(load_photo_scene(n, unpacked))
            continue
        root = hummingbird_path(hummingbird)
        if root is None:
            log("skipping the hummingbird scene: give the MAGIC paper's repository folder "
                "with --hummingbird PATH (or $MAGIC_HUMMINGBIRD); see benchmarks/fullsize.py")
            continue
        try:
            out.append(load_hummingbird(root))
        except FullsizeError as e:
            log(f"skipping the hummingbird scene: {e}")
    return out


def show(scenes: list[Scene], out: Path, long_side: int = 1000) -> list[Path]:
    """One picture per scene: the photo with the source (red) and every guide's outline."""
    from scipy import ndimage

    colours = {"move": (0, 255, 0), "copy": (0, 160, 255), "reshape": (255, 0, 255)}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sc in scenes:
        img = sc.image.astype(np.float32)
        img[sc.source_mask] = 0.5 * img[sc.source_mask] + (127, 0, 0)
        for mode, g in sc.guides.items():
            if mode in colours:
                edge = g & ~ndimage.binary_erosion(g, iterations=3)
                img[edge] = colours[mode]
        im = Image.fromarray(img.astype(np.uint8))
        im.thumbnail((long_side, long_side))
        p = out / f"{sc.name}.png"
        im.save(p)
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="benchmarks/fullsize.py", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["fetch", "show"])
    ap.add_argument("--cache", type=Path, default=None, help=f"default {default_cache()}")
    ap.add_argument("--deb", type=Path, default=None, help="an already downloaded .deb")
    ap.add_argument("--hummingbird", default=None, help="the MAGIC paper's repository folder")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "fullsize")
    args = ap.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.cache, args.deb))
            return 0
        scenes = load_scenes(None, cache=args.cache, deb=args.deb, hummingbird=args.hummingbird)
        for p in show(scenes, args.out):
            print(p)
        return 0
    except FullsizeError as e:
        print(f"benchmarks/fullsize.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
