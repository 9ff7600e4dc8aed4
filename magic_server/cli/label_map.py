"""magic-label-map: a first label map of a photo, to touch up and paint a layout edit on.

    magic-label-map photo.png --labels 4 --out labels.png --target-copy wanted.png

Writes the photo's regions of like colour and texture as flat label colours (SOURCE), and
optionally an identical copy (TARGET) to paint the wanted layout on. Errors are one line on
stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from magic_server.imageio import ImageError, load_image, save_png
from magic_server.labels.clustering import (
    MAX_LABELS,
    MIN_LABELS,
    colour_map,
    first_label_map,
    label_palette,
)

PROG = "magic-label-map"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path, help="the photo (PNG, JPEG, ...)")
    ap.add_argument("--labels", type=int, required=True, metavar="N",
                    help=f"how many labels ({MIN_LABELS}-{MAX_LABELS})")
    ap.add_argument("--out", type=Path, required=True, metavar="SOURCE.png",
                    help="where the label map of the photo goes")
    ap.add_argument("--target-copy", type=Path, metavar="TARGET.png",
                    help="also write an identical copy to paint the wanted layout on")
    ap.add_argument("--seed", type=int, default=0, help="seed of the clustering (default 0)")
    return ap


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not MIN_LABELS <= args.labels <= MAX_LABELS:
        parser.error(f"--labels must be between {MIN_LABELS} and {MAX_LABELS}, not "
                     f"{args.labels}")
    outputs = [args.out] + ([args.target_copy] if args.target_copy else [])
    if any(_same_file(p, args.image) for p in outputs):
        parser.error("an output path is the photo itself; choose another file name")
    if args.target_copy and _same_file(args.out, args.target_copy):
        parser.error("--out and --target-copy are the same file")
    try:
        image = load_image(args.image)
        indices = first_label_map(image, args.labels, seed=args.seed)
        found = int(indices.max()) + 1
        painted = colour_map(indices, label_palette(found))
        for path in outputs:
            save_png(path, painted)
    except ImageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\n{PROG}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    h, w = indices.shape
    print(f"wrote {args.out} ({w}x{h}, {found} labels)")
    if found < args.labels:
        print(f"note: the photo has only {found} distinct colour{'s' if found > 1 else ''}, "
              f"so the map has {found} label{'s' if found > 1 else ''}, not {args.labels}")
    if args.target_copy:
        print(f"wrote {args.target_copy} (an identical copy to paint on)")
    target = shlex.quote(str(args.target_copy)) if args.target_copy else "TARGET.png"
    print(f"next: paint over {target} with an existing label's colour using the pencil tool, "
          f"then run magic-edit {shlex.quote(str(args.image))} --source-labels "
          f"{shlex.quote(str(args.out))} --target-labels {target} -o RESULT.png")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
