"""Markdown report and picture grids for benchmarks/run.py results."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

TILE_H = 112
CAPTION_H = 14
GAP = 4


def _tile(img: np.ndarray, caption: str, height: int = TILE_H) -> Image.Image:
    im = Image.fromarray(img)
    w = max(1, round(im.width * height / im.height))
    im = im.resize((w, height), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (w, height + CAPTION_H), (255, 255, 255))
    out.paste(im, (0, CAPTION_H))
    ImageDraw.Draw(out).text((2, 1), caption[: max(4, w // 6)], fill=(0, 0, 0))
    return out


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def masks_overlay(image: np.ndarray, source_mask: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """Source mask in red, guide in green (yellow where both)."""
    out = overlay(image, source_mask & ~guide, (255, 0, 0))
    out = overlay(out, guide & ~source_mask, (0, 255, 0))
    return overlay(out, guide & source_mask, (255, 255, 0))


def picture_grid(image: np.ndarray, source_mask: np.ndarray, rows: list[tuple]) -> Image.Image:
    """One row per edit: input | guide (green; red: the source, yellow: both) | cut-paste +
    heal (when the row has it) | sample 1..n. A row is (label, guide, samples, record[, heal])."""
    tiles_rows = []
    for label, guide, samples, _rec, *rest in rows:
        heal = rest[0] if rest else None
        tiles = [_tile(image, "input"), _tile(masks_overlay(image, source_mask, guide), label)]
        if heal is not None:
            tiles.append(_tile(heal, "cut-paste+heal"))
        tiles += [_tile(s, f"sample {i + 1}") for i, s in enumerate(samples)]
        tiles_rows.append(tiles)
    width = max(sum(t.width for t in r) + GAP * (len(r) - 1) for r in tiles_rows)
    height = len(tiles_rows) * (TILE_H + CAPTION_H + GAP) - GAP
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for r in tiles_rows:
        x = 0
        for t in r:
            grid.paste(t, (x, y))
            x += t.width + GAP
        y += TILE_H + CAPTION_H + GAP
    return grid


def _f(v, fmt: str = "{:.2f}", none: str = "n/a") -> str:
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return fmt.format(v)


UNTRAINED_NOTE = (
    "> These runs used an UNTRAINED classifier (random weights) because the quasi-robust "
    "weights are not installed on the machine that ran them. Speed figures are valid (the "
    "network is the same size); quality figures measure the pipeline, not MAGIC's real look. "
    "Every quality row names its weights."
)
SPEED_HEADER = (
    "| scene | edit | device | preset | working size | samples | iterations | s / iteration "
    "| iteration cost (classifier forwards) | first preview (s) | result (s) | peak RAM (MB) "
    "| peak GPU (MB) | load avg |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
QUALITY_INTRO = (
    "Guide IoU and changed-region agreement: the edited image judged by an independent "
    "colour/texture segmenter fitted on the photo and its source mask (benchmarks/quality.py); "
    "'unedited' is what the untouched photo scores against the same guide, 'ceiling' is the "
    "segmenter's IoU on the photo itself. Realism ratios: patch distance of the edited region "
    "to the photo divided by the photo's own self-similarity (about 1 or below = as natural as "
    "the photo; larger = unlike the photo). Diversity: mean pairwise RMS difference between "
    "samples in the edit region (8-bit levels). 'unknown': share of the changed region whose "
    "colour/texture occurs nowhere in the photo (e.g. noise); it counts as disagreement."
)
QUALITY_HEADER = (
    "| scene | edit | device | preset | weights | guide IoU (unedited / ceiling) "
    "| changed-region agreement (unedited) | unknown | PSNR outside (dB) | max abs outside "
    "| coherence ratio | completeness ratio | diversity |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
GLOSSARY = """## What the figures mean

- *s / iteration*: mean wall time between consecutive synthesis iterations (all samples in one
  batch), after the mask-net fit.
- *iteration cost*: s / iteration divided by the time of one classifier forward (with feature
  taps, no gradient) at the same batch and working size, timed in the same run: how many
  forwards one MAGIC iteration costs.
- *first preview*: from the call to the first preview frame (a preview every quarter of the
  iterations), including the mask-net fit.
- *result*: the whole `Engine.synthesize` call.
- *peak RAM*: the process's resident memory, sampled every 20 ms during the call; *peak GPU*:
  torch's peak allocated CUDA memory.
- *load avg*: the machine's 1-minute load average before / after the edit; a load above the
  number of cores means other work shared the CPU and the times are pessimistic.
- *PSNR / max abs outside*: against the photo, outside the source and guide masks grown by 4%
  of the short side (inf = untouched).
"""


def _load(r: dict) -> str:
    before, after = r.get("load_avg") or (None, None)
    return "n/a" if before is None else f"{before:.1f} / {after:.1f}"


def _speed_row(r: dict) -> str:
    h, w = r["working_size"]
    return (f"| {r['scene']} | {r['mode']} | {r['device_name']} | {r['preset']} | {w}x{h} "
            f"| {r['samples']} | {r['iterations']} (+{r['mask_net_steps']} mask-net) "
            f"| {_f(r['seconds_per_iteration'], '{:.3f}')} "
            f"| {_f(r['iteration_cost_forwards'], '{:.1f}')} "
            f"| {_f(r['first_preview_s'], '{:.1f}')} | {_f(r['result_s'], '{:.1f}')} "
            f"| {_f(r['peak_rss_mb'], '{:.0f}')} | {_f(r['peak_gpu_mb'], '{:.0f}')} "
            f"| {_load(r)} |")


def _quality_row(r: dict) -> str:
    q = r["quality"]
    return (f"| {r['scene']} | {r['mode']} | {r['device_name']} | {r['preset']} "
            f"| {r['weights']} "
            f"| {_f(q['guide_iou'])} ({_f(q['baseline_iou'])} / "
            f"{_f(q['segmenter_ceiling_iou'])}) "
            f"| {_f(q['changed_agreement'])} ({_f(q['baseline_agreement'])}) "
            f"| {_f(q.get('unknown_fraction'))} "
            f"| {_f(q['psnr_outside'], '{:.1f}')} | {q['max_abs_outside']} "
            f"| {_f(q['coherence_ratio'])} | {_f(q['completeness_ratio'])} "
            f"| {_f(q['diversity'], '{:.1f}')} |")


def markdown(payload: dict, licences: dict[str, str]) -> str:
    m = payload["machine"]
    recs = payload["records"]
    command = m.get("command") or "python benchmarks/run.py"
    weights = sorted({r["weights"] for r in recs})
    lines = [
        "# Benchmarks: speed and quality of MAGIC edits", "",
        f"Generated by `{command}` on {m.get('date', 'an unrecorded date')}.", "",
        f"- CPU: {m['cpu']} ({m['cpu_count']} cores visible, torch threads {m['threads']})",
        f"- GPU: {m['cuda'] or 'none on this machine'}",
        f"- torch {m['torch']}, Python {m['python']}; whole run {m['wall_s']:.0f} s", "",
        f"**Classifier weights: {', '.join(weights)}.**", "",
    ]
    if not any(r["weights_trained"] for r in recs):
        lines += [UNTRAINED_NOTE, ""]
    lines += ["## Speed", "", SPEED_HEADER] + [_speed_row(r) for r in recs]
    lines += ["", "## Quality", "", QUALITY_INTRO, "", QUALITY_HEADER]
    lines += [_quality_row(r) for r in recs]
    lines += ["", "## Pictures", "",
              "Each row: input, source mask (red), guide mask (green), then the samples.", ""]
    seen = set()
    for r in recs:
        key = (r["scene"], r["device"])
        if key in seen or not r.get("picture"):
            continue
        seen.add(key)
        rows = [x for x in recs if (x["scene"], x["device"]) == key]
        what = "; ".join(f"{x['mode']} [{x['preset']}]: {x['edit'] or x['mode']}" for x in rows)
        lines += [f"### {r['scene']} ({r['device_name']}, weights: {r['weights']})", "",
                  f"Rows: {what}.", "",
                  f"![{r['scene']} on {r['device_name']}]({r['picture']})", ""]
    lines += ["## Scenes and licences", "", "| scene | licence |", "|---|---|"]
    lines += [f"| {name} | {lic} |" for name, lic in licences.items()]
    lines += ["", "Sources and exact licence statements: samples/LICENSES.md.", "", GLOSSARY]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Re-render a report from a results.json: python benchmarks/report.py RESULTS REPORT.md"""
    import json
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python benchmarks/report.py RESULTS.json REPORT.md", file=sys.stderr)
        return 2
    payload = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    index = Path(__file__).resolve().parent.parent / "samples" / "index.json"
    scenes = json.loads(index.read_text(encoding="utf-8"))["scenes"]
    names = dict.fromkeys(r["scene"] for r in payload["records"])
    licences = {n: scenes.get(n, {}).get("licence", "") for n in names}
    Path(args[1]).write_text(markdown(payload, licences), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
