"""`python -m magic_server.sample` (`make sample`): one MAGIC edit on the bundled sample scene.

Reads samples/index.json for the default scene, uses the quasi-robust ResNet-50 when it is
installed or can be downloaded, else the EfficientNet-Lite0 stand-in (ImageNet, not robust; said
plainly), runs a move edit with a
budget that suits the device, and writes out/sample-N.png plus out/sample-overview.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from magic_server.imageio import ImageError, load_image, load_mask, save_png
from magic_server.weights.store import download_progress

PROG = "magic-sample"
REPO_SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# The sample starts from the scene's shipped composite (the object pasted at its new place, as
# an artist's moved layer gives): the product keeps the pasted object and synthesizes the
# seams, its rim and the uncovered old place.
CPU_SETTINGS = {"preset": "draft", "resolution": 160, "samples": 2}
GPU_SETTINGS = {"preset": "draft", "resolution": 224, "samples": 3}
PANEL_HEIGHT = 256
CAPTION_HEIGHT = 18
GAP = 6


class SampleError(Exception):
    """A problem with the bundled samples or the output folder; printed as one line."""


@dataclass
class Scene:
    name: str
    image: Path
    source_mask: Path
    guide_mask: Path
    mode: str
    description: str = ""
    composite: Path | None = None  # the artist's pasted layer for this edit, when shipped


def read_scene(samples_root: Path, scene: str | None = None, mode: str = "move") -> Scene:
    index_path = samples_root / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SampleError(f"{index_path} not found: run from the repository root, or pass "
                          "--samples-root DIR") from None
    except (OSError, ValueError) as e:
        raise SampleError(f"cannot read {index_path}: {e}") from None
    scenes = index.get("scenes") or {}
    name = scene or index.get("default")
    if name not in scenes:
        known = ", ".join(sorted(scenes)) or "none"
        raise SampleError(f"scene {name!r} is not in {index_path} (scenes: {known})")
    entry = scenes[name]
    guides = entry.get("guides") or {}
    if mode not in guides:
        raise SampleError(f"scene {name!r} has no {mode!r} guide mask in {index_path}")
    description = (entry.get("edits") or {}).get(mode, "")
    composite = (entry.get("composites") or {}).get(mode)
    return Scene(name, samples_root / entry["image"], samples_root / entry["source_mask"],
                 samples_root / guides[mode], mode, description,
                 samples_root / composite if composite else None)


def build_sample_engine(weights: str | None, device):
    """The engine on the named weights; by default the robust ResNet-50, or, when it cannot be
    had, the EfficientNet-Lite0 stand-in (said on stderr). Random weights only when named."""
    from magic_server.engines import Fallback, build_engine

    if weights is not None:  # the user named weights: no silent fallback
        return build_engine(weights, device)
    print("sample: looking for the classifier weights (downloading them if needed)...",
          file=sys.stderr, flush=True)
    return build_engine(
        None, device, fallback=Fallback.STAND_IN, allow_download=True,
        progress=download_progress(),
        say=lambda text: print(f"\nsample: NOTE: {text}\n", file=sys.stderr, flush=True))


def guide_panel(image: np.ndarray, source: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """The photo dimmed, the source object tinted red, the guide region tinted green."""
    out = image.astype(np.float32) * 0.55
    out[source] = out[source] * 0.5 + np.array([230, 40, 40]) * 0.5
    out[guide] = out[guide] * 0.4 + np.array([40, 230, 80]) * 0.6
    return np.clip(out, 0, 255).astype(np.uint8)


def overview(panels: list[tuple[str, np.ndarray]], height: int = PANEL_HEIGHT) -> np.ndarray:
    """Panels side by side at one height, each with a caption above it."""
    scaled = []
    for caption, a in panels:
        h, w = a.shape[:2]
        width = max(1, round(w * height / h))
        scaled.append((caption, Image.fromarray(a).resize((width, height), Image.Resampling.LANCZOS)))
    total_w = sum(im.width for _, im in scaled) + GAP * (len(scaled) + 1)
    canvas = Image.new("RGB", (total_w, height + CAPTION_HEIGHT + 2 * GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = GAP
    for caption, im in scaled:
        draw.text((x, GAP // 2 + 2), caption, fill=(0, 0, 0), font=font)
        canvas.paste(im, (x, CAPTION_HEIGHT + GAP))
        x += im.width + GAP
    return np.asarray(canvas).copy()


CROP = 160  # side of the 100 % crops under the overview


def crop_at(image: np.ndarray, mask: np.ndarray, side: int = CROP) -> np.ndarray:
    """A side x side window of the image at its own scale (100 %), centred on the mask."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    side_y, side_x = min(side, h), min(side, w)
    top = int(np.clip(round(ys.mean()) - side_y // 2, 0, h - side_y))
    left = int(np.clip(round(xs.mean()) - side_x // 2, 0, w - side_x))
    return image[top : top + side_y, left : left + side_x]


def hundred_percent_crops(image: np.ndarray, result: np.ndarray, source: np.ndarray,
                          guide: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The photo and the result at 100 %, around the object's old place and its new one."""
    panels = []
    arrived = guide & ~source  # where the object arrives (the guide may keep the rest)
    for place, mask in (("old place", source & ~guide),
                        ("new place", arrived if arrived.any() else guide)):
        if mask.any():
            panels += [(f"photo, {place}, 100%", crop_at(image, mask)),
                       (f"result 1, {place}, 100%", crop_at(result, mask))]
    return panels


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of panels (from overview) one under the other, on white."""
    width = max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0]
    return out


def read_composite(scene: Scene, image: np.ndarray) -> np.ndarray | None:
    """The scene's shipped composite (the object's pixels pasted where the guide puts it, as an
    artist's moved or scaled layer gives; samples/README.md), or None: start from noise."""
    if scene.composite is None:
        return None
    composite = load_image(scene.composite)
    if composite.shape != image.shape:
        raise SampleError(f"{scene.composite} is {composite.shape[1]}x{composite.shape[0]}, "
                          f"the photo {image.shape[1]}x{image.shape[0]}")
    return composite


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m magic_server.sample",
                                description="Run one MAGIC edit on the bundled sample scene.")
    p.add_argument("--samples-root", type=Path, default=None,
                   help="folder holding index.json (default: the repository's samples/)")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out/)")
    p.add_argument("--scene", default=None, help="scene name (default: the index's default)")
    p.add_argument("--mode", default="move", help="edit to run (default move)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--weights", default=None,
                   help="checkpoint file, 'efficientnet-lite0', or 'untrained'")
    p.add_argument("--preset", default=None, help="override the device's default budget")
    p.add_argument("--iterations", type=int, default=None, help="override the iteration count")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--samples", type=int, default=None)
    return p


def _default_samples_root() -> Path:
    for candidate in (Path.cwd() / "samples", REPO_SAMPLES):
        if (candidate / "index.json").exists():
            return candidate
    return REPO_SAMPLES


def run(args: argparse.Namespace) -> list[Path]:
    from magic_server.cli.progress_bar import EditProgressBar
    from magic_server.devices import resolve_device
    from magic_server.engine.api import SynthesisOptions

    scene = read_scene(args.samples_root or _default_samples_root(), args.scene, args.mode)
    image = load_image(scene.image)
    size = (image.shape[1], image.shape[0])
    source, guide = load_mask(scene.source_mask, size), load_mask(scene.guide_mask, size)
    device = resolve_device(args.device)
    settings = dict(GPU_SETTINGS if device.type == "cuda" else CPU_SETTINGS)
    for key in ("preset", "resolution", "samples"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    options = SynthesisOptions(mode=scene.mode, iterations=args.iterations, seed=0, **settings)
    engine = build_sample_engine(args.weights, device)
    label = engine.weights_label
    what = f" ({scene.description})" if scene.description else ""
    print(f"sample: scene {scene.name!r}, {scene.mode} edit{what}, on {device}, preset "
          f"{options.preset}, resolution {options.resolution}, {options.samples} samples, "
          f"weights: {label}", file=sys.stderr, flush=True)
    if device.type != "cuda" and args.preset is None:
        print("sample: on a CPU this uses the 'draft' budget, started from the object pasted at "
              "its new place (as a moved layer gives), so that it ends in seconds (try "
              "magic-edit --preset quality for real edits).", file=sys.stderr)
    bar = EditProgressBar()
    try:
        result = engine.synthesize(
            image, source, guide, options, on_progress=bar, cancel=threading.Event(),
            init_image=read_composite(scene, image))
    finally:
        bar.close()
    written = []
    for i, result_image in enumerate(result.images, start=1):
        written.append(save_png(args.out / f"sample-{i}.png", result_image))
    panels = [("input", image), (f"{scene.mode} guide", guide_panel(image, source, guide))]
    panels += [(f"result {i}", im) for i, im in enumerate(result.images, start=1)]
    crops = hundred_percent_crops(image, result.images[0], source, guide)
    sheet = overview(panels)
    if crops:
        sheet = stack_rows([sheet, overview(crops, height=CROP)])
    written.append(save_png(args.out / "sample-overview.png", sheet))
    for path in written:
        print(f"wrote {path}")
    print(f"weights: {label}" + ("  <- UNTRAINED (random weights)" if
                                 label.startswith("untrained") else ""))
    for note in result.notes:
        print(f"note: {note}")
    print(f"took {result.elapsed_s:.0f} s for {result.iterations} iterations")
    return written


def main(argv: list[str] | None = None) -> int:
    from magic_server.devices import DeviceError
    from magic_server.engine.api import Cancelled, EngineInputError
    from magic_server.weights.errors import WeightsError

    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (SampleError, ImageError, WeightsError, DeviceError, EngineInputError) as e:
        print(f"sample: error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Cancelled):
        print("\nsample: cancelled", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
