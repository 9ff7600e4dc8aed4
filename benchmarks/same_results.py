"""Are two benchmark runs the same edits? For a change meant to keep behaviour (a refactor):
run the same benchmark before and after, into two folders, then

    python benchmarks/same_results.py BEFORE AFTER

compares every result picture (*.png, byte for byte) and the figures of results.json (every
field except timings, memory and load, which vary from run to run). Prints what differs; exit
status 0 when nothing does, 1 otherwise."""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import sys
from pathlib import Path

# fields that measure the machine, not the edit
VARYING = ("second", "elapsed", "time", "_s", "rss", "peak", "date", "sec", "load_avg",
           "machine", "forward", "cost")


def figures(value):
    """`value` without the fields that vary from run to run."""
    if isinstance(value, dict):
        return {k: figures(v) for k, v in value.items()
                if not any(word in k.lower() for word in VARYING)}
    if isinstance(value, list):
        return [figures(v) for v in value]
    return value


def differences(before: Path, after: Path) -> list[str]:
    out = []
    pictures = sorted(p.relative_to(before) for p in before.rglob("*.png"))
    if not pictures and not (before / "results.json").exists():
        return [f"{before}: no results.json and no pictures to compare"]
    for rel in pictures:
        if not (after / rel).exists():
            out.append(f"{rel}: missing after")
        elif not filecmp.cmp(before / rel, after / rel, shallow=False):
            out.append(f"{rel}: pixels differ")
    if (before / "results.json").exists():
        if not (after / "results.json").exists():
            return [*out, "results.json: missing after"]
        a = figures(json.loads((before / "results.json").read_text()))
        b = figures(json.loads((after / "results.json").read_text()))
        out += [f"results.json: {line}" for line in _diff(a, b, "")]
    return out


def _diff(a, b, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for k in sorted(set(a) | set(b)):
            lines += _diff(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        return lines
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in _diff(x, y, f"{where}[{i}]")]
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if a == b or both_nan else [f"{where}: {a!r} -> {b!r}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    found = differences(args.before, args.after)
    for line in found[:50]:
        print(line)
    pictures = len(list(args.before.rglob("*.png")))
    print(f"{'DIFFERENT' if found else 'same'}: {pictures} pictures, results.json figures"
          + (f" ({len(found)} differences)" if found else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
