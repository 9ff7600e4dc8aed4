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


CROP_CAPTION_H = 16


def place_centres(source_mask: np.ndarray, guide: np.ndarray) -> list[tuple[str, int, int]]:
    """(name, y, x) of the places a crop should show: the old place (what the source leaves:
    source minus guide, or the whole source) and, when the guide adds pixels, the new place
    (guide minus source); centroids, in the photo's pixels."""
    out = []
    old = source_mask & ~guide
    if not old.any():
        old = source_mask
    new = guide & ~source_mask
    for name, m in (("old place", old), ("new place", new)):
        if m.any():
            ys, xs = np.nonzero(m)
            out.append((name, round(ys.mean()), round(xs.mean())))
    return out


def crop_box(h: int, w: int, cy: int, cx: int, size: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a size x size window centred at (cy, cx), slid inside the image (and
    cut to the image when the image is smaller)."""
    ch, cw = min(size, h), min(size, w)
    y0 = min(max(0, cy - ch // 2), h - ch)
    x0 = min(max(0, cx - cw // 2), w - cw)
    return y0, x0, y0 + ch, x0 + cw


def worst_rim_centre(image: np.ndarray, result: np.ndarray, source_mask: np.ndarray,
                     guide: np.ndarray) -> tuple[int, int] | None:
    """(y, x) on the rim of the pixels `result` changed, outside the masks, where its gradient
    most exceeds the photo's (averaged over 17x17 px): where a seam would show worst. None when
    nothing changed outside the masks."""
    import fullres_quality as fq
    import quality
    changed = np.any(image != result, axis=-1)
    r = fq.RIM_PX
    rim = (quality.dilate(changed, r) & ~quality.erode(changed, r)
           & ~quality.dilate(source_mask | guide, r + 2))
    if not rim.any():
        return None
    excess = quality.box_mean(fq.luminance_gradient(result)
                              - fq.luminance_gradient(image), 8)
    flat = np.where(rim, excess, -np.inf)
    y, x = np.unravel_index(int(np.argmax(flat)), flat.shape)
    return int(y), int(x)


def crops_picture(image: np.ndarray, source_mask: np.ndarray, guide: np.ndarray,
                  rows: list[tuple[str, np.ndarray]], size: int = 384,
                  rim_from: np.ndarray | None = None) -> Image.Image:
    """100% crops (the photo's own pixels, no scaling) of the old and the new place: one row
    for the photo, then one per (label, image) row (the peers, MAGIC's result); one column per
    place, every crop at the same window. `rim_from` (MAGIC's result) adds a column where its
    changed pixels end worst outside the masks (worst_rim_centre)."""
    h, w = source_mask.shape
    places = place_centres(source_mask, guide)
    if rim_from is not None:
        centre = worst_rim_centre(image, rim_from, source_mask, guide)
        if centre is not None:
            places.append(("worst rim", *centre))
    boxes = [(name, crop_box(h, w, cy, cx, size)) for name, cy, cx in places]
    all_rows = [("photo", image)] + list(rows)
    cw = max(x1 - x0 for _, (_, x0, _, x1) in boxes)
    ch = max(y1 - y0 for _, (y0, _, y1, _) in boxes)
    width = len(boxes) * (cw + GAP) - GAP
    height = len(all_rows) * (ch + CROP_CAPTION_H + GAP) - GAP
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    y = 0
    for label, img in all_rows:
        x = 0
        for name, (y0, x0, y1, x1) in boxes:
            draw.text((x + 2, y + 2), f"{label}: {name} ({x0},{y0})"[: max(8, cw // 6)],
                      fill=(0, 0, 0))
            out.paste(Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1])),
                      (x, y + CROP_CAPTION_H))
            x += cw + GAP
        y += ch + CROP_CAPTION_H + GAP
    return out


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
    "colour/texture segmenter (gradient-boosted trees) fitted on the photo and its source mask "
    "(benchmarks/quality.py); 'unedited' is what the untouched photo scores against the same "
    "guide, 'ceiling' is the segmenter's IoU on the photo itself. Coherence: distance of the "
    "edit region's patches to their nearest other patch of the photo, divided by the photo's "
    "own self-similarity (the photo itself scores about 0.5-1; lower = more natural). "
    "Completeness: the same for the photo's region patches against the result (0 for the "
    "photo). Noise figure: high-frequency energy of the edit region relative to the photo's "
    "(1 = like the photo, < 0.7 blurred, > 1.3 noisy). Object left (removals): share of the "
    "removed object a segmenter of that object still finds. Diversity: mean pairwise RMS "
    "difference between samples in the edit region (8-bit levels). 'unknown': share of the "
    "changed region whose colour/texture occurs nowhere in the photo (e.g. noise); it counts "
    "as disagreement. Figures are means over the samples; outside is the worst sample."
)
QUALITY_HEADER = (
    "| scene | edit | device | preset | start | weights | guide IoU (unedited / ceiling) "
    "| changed-region agreement (unedited) | unknown | PSNR outside (dB) | max abs outside "
    "| coherence | completeness | noise figure | object left | diversity |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
PEERS_INTRO = (
    "Each edit beside what an artist makes by hand (benchmarks/peers.py): the photo unchanged; "
    "cut-paste (the object's pixels carried, and scaled for a reshape, from where the source "
    "mask has it to where the guide puts it); cut-paste + heal (the uncovered old place filled "
    "by PatchMatch, as GIMP's Resynthesizer heal-selection does; for a removal, the object "
    "inpainted). Same metrics as above. Targets (issue 10): coherence no higher than "
    "cut-paste + heal's, completeness <= 1.1, guide IoU >= 0.8 x the segmenter's ceiling, "
    "noise figure 0.7-1.3, outside the edit bit-identical, diversity > 0; for removals also "
    "object left <= 5% and coherence <= 1.0. A missed target says by how much."
)
FINDINGS = "findings"  # the reader's summary of the pictures, beside the targets table
PICTURES_NOTE = (
    "Each row: input, the masks (green: the guide, where the object should be; red: the source, "
    "where it is; yellow: both), cut-paste + heal (the hand-made peer), then MAGIC's samples."
)
PEERS_HEADER = (
    "| row | coherence | completeness | guide IoU / ceiling | noise figure | outside "
    "| object left | diversity |\n|---|---|---|---|---|---|---|---|"
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
- *PSNR / max abs outside*: against the photo, outside the footprint the engine declares it may
  change for that edit (its edit region, rim and feather band; inf / 0 = bit-identical). The
  peers, which declare nothing, are judged outside the source and guide masks grown by 4% of
  the short side.
- *coherence, completeness, noise figure, object left*: definitions in the module docstring of
  benchmarks/quality.py; the peers: benchmarks/peers.py.
"""


def _load(r: dict) -> str:
    before, after = r.get("load_avg") or (None, None)
    return "n/a" if before is None else f"{before:.1f} / {after:.1f}"


def _speed_row(r: dict) -> str:
    h, w = r["working_size"]
    return (f"| {r['scene']} | {r['mode']} | {r['device_name']} | {r['preset']} | {w}x{h} "
            f"| {r['samples']} | {r['iterations']}"
            f"{f' (+{m} mask-net)' if (m := r['mask_net_steps']) else ''} "
            f"| {_f(r['seconds_per_iteration'], '{:.3f}')} "
            f"| {_f(r['iteration_cost_forwards'], '{:.1f}')} "
            f"| {_f(r['first_preview_s'], '{:.1f}')} | {_f(r['result_s'], '{:.1f}')} "
            f"| {_f(r['peak_rss_mb'], '{:.0f}')} | {_f(r['peak_gpu_mb'], '{:.0f}')} "
            f"| {_load(r)} |")


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _quality_row(r: dict) -> str:
    q = r["quality"]
    return (f"| {r['scene']} | {r['mode']} | {r['device_name']} | {r['preset']} "
            f"| {r.get('start', 'noise')} | {r['weights']} "
            f"| {_f(q['guide_iou'])} ({_f(q['baseline_iou'])} / "
            f"{_f(q['segmenter_ceiling_iou'])}) "
            f"| {_f(q['changed_agreement'])} ({_f(q['baseline_agreement'])}) "
            f"| {_f(q.get('unknown_fraction'))} "
            f"| {_f(q['psnr_outside'], '{:.1f}')} | {q['max_abs_outside']} "
            f"| {_f(q['coherence_ratio'])} | {_f(q['completeness_ratio'])} "
            f"| {_f(q.get('noise_figure'))} | {_pct(q.get('object_left'))} "
            f"| {_f(q['diversity'], '{:.1f}')} |")


def _peer_row(name: str, q: dict) -> str:
    outside = ("bit-identical" if q.get("outside_identical", q["max_abs_outside"] == 0)
               else f"changed (max {q['max_abs_outside']})")
    return (f"| {name} | {_f(q['coherence_ratio'])} | {_f(q['completeness_ratio'])} "
            f"| {_f(q['guide_iou'])} / {_f(q['segmenter_ceiling_iou'])} "
            f"| {_f(q.get('noise_figure'))} | {outside} | {_pct(q.get('object_left'))} "
            f"| {_f(q['diversity'], '{:.1f}')} |")


def _target_cell(t: dict) -> str:
    """'met', or by how much a target (issue 10's or issue 17's) was missed, in its units."""
    if t["met"]:
        return "met"
    by = t["missed_by"]
    if t["name"] == "outside":
        return f"missed (max abs {by})"
    if t["name"] == "object left":
        return f"missed by {by:.1%}"
    if t["name"] == "changed outside":
        return f"missed by {by:.3%}"
    if t["name"] == "beyond selection":
        return f"missed: {by} px"
    return f"missed by {by:.2f}"


def peers_section(recs: list[dict]) -> list[str]:
    """Per edit: the peers' rows and the product's, then each target met or missed."""
    lines = ["## Beside the hand-made peers", "", PEERS_INTRO, ""]
    summary = ["| scene | edit | device | preset | start | targets met | missed |",
               "|---|---|---|---|---|---|---|"]
    for r in recs:
        ts = r.get("targets") or []
        missed = [t for t in ts if not t["met"]]
        what = ", ".join(f"{t['name']} ({_target_cell(t)[len('missed '):]})" for t in missed)
        summary.append(
            f"| {r['scene']} | {r['mode']} | {r['device_name']} | {r['preset']} "
            f"| {r.get('start', 'noise')} | {len(ts) - len(missed)}/{len(ts)} | {what or '-'} |")
    start, end = _markers(FINDINGS)
    lines += summary + ["", start, end, ""]  # what the pictures show, written by hand, kept
    for r in recs:
        title = (f"### {r['scene']} {r['mode']}: {r['edit'] or r['mode']} "
                 f"({r['device_name']}, {r['preset']}, from {r.get('start', 'noise')})")
        lines += [title, "", PEERS_HEADER]
        lines += [_peer_row(name, q) for name, q in (r.get("peers") or {}).items()]
        lines.append(_peer_row(f"**MAGIC {r['preset']}**", r["quality"]))
        ts = r.get("targets") or []
        if ts:
            lines += ["", "| target | wanted | MAGIC | |", "|---|---|---|---|"]
            for t in ts:
                v = t["value"]
                shown = (_pct(v) if t["name"] == "object left"
                         else str(v) if t["name"] == "outside" else _f(v))
                lines.append(f"| {t['name']} | {t['target']} | {shown} | {_target_cell(t)} |")
        lines.append("")
    return lines


FULLRES_INTRO = (
    "Issue 17's figures, measured on the result at the photo's own size (definitions: "
    "benchmarks/fullres_quality.py). *seam*: at about 1,000 px on the long "
    "side, the gradient energy of the result on the rim of the pixels it changed, where that "
    "rim lies outside the masks, over the photo's own there (1 = no new edge; n/a: nothing "
    "changed outside the masks). *edges*: the share of the fill's pixels (changed, outside "
    "the guide's outline band) whose gradient exceeds the 99th percentile of the photo's in "
    "the ring near each fill pixel (tiles of 5% of the long side), over 1% (1 = as edgy as "
    "the surroundings; n/a: no fill); the target judges this figure. *edges (whole ring)*: "
    "the same with one threshold, the percentile over the whole ring, as issue 17 words it "
    "(a reference: a fill beside smooth surroundings that share the ring with a sharp object "
    "can hide a staircase from it). "
    "*edges (object)*: the same inside the placed object against the object's own gradient "
    "in the photo (no target). *changed outside*: share of the image changed beyond 2.5% of "
    "the long side from the masks (worst sample). *object structure*: SSIM at 96 px (on the "
    "edit's box) between the result and the object carried by the edit's known transform, "
    "inside the guide. *halo*: mean |result - photo| (levels) on the ring just outside the "
    "guide (no target; a cut-paste scores 0). *beyond selection* (removals): pixels changed beyond the removed "
    "selection grown by 2% of the hole's diameter. Targets (issue 17, item 5): seam <= 1.2, "
    "edges <= 1.5, changed outside <= 0.1%, object structure >= 0.8 for moves, nothing "
    "changed beyond a removal's grown selection; a missed target says by how much."
)
FULLRES_HEADER = (
    "| row | seam | edges | edges (whole ring) | edges (object) | changed outside "
    "| changed at all | object structure | halo (levels) | beyond selection |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)
CROPS_NOTE = (
    "100% crops (the photo's own pixels, no scaling) of the old place and the new place "
    "(centred on what the source leaves and on what the guide adds) and, when MAGIC changed "
    "pixels outside the masks, of the worst place on the rim of its changes (where its "
    "gradient most exceeds the photo's): the photo, the hand-made peers, then MAGIC's first "
    "sample; the numbers are each crop's top-left corner in the photo."
)


def _fullres_row(name: str, q: dict) -> str:
    f = q.get("fullres") or {}
    beyond = f.get("beyond_selection_px")
    beyond_cell = ("n/a" if beyond is None else
                   f"{beyond} px ({f['beyond_selection']:.3%}; grown {f['beyond_grow_px']:.0f} "
                   f"px, farthest change {f['beyond_farthest_px']:.0f} px)")
    return (f"| {name} | {_f(f.get('seam'))} | {_f(f.get('edges'))} "
            f"| {_f(f.get('edges_whole_ring'))} | {_f(f.get('edges_object'))} "
            f"| {_f(f.get('changed_outside'), '{:.3%}')}"
            f"{_levels(f)} "
            f"| {_f(f.get('changed_share'), '{:.2%}')} | {_f(f.get('object_structure'))} "
            f"| {_f(f.get('halo'), '{:.1f}')} | {beyond_cell} |")


def _levels(f: dict) -> str:
    """' (mean 1.2, max 7 levels)' after changed outside, when it changed anything there."""
    if not f.get("changed_outside"):
        return ""
    return (f" (mean {_f(f.get('outside_mean_abs'), '{:.1f}')}, max "
            f"{f.get('outside_max_abs', 'n/a')} levels)")


def _fullres_value(t: dict) -> str:
    v = t["value"]
    if t["name"] == "changed outside":
        return _f(v, "{:.3%}")
    if t["name"] == "beyond selection":
        return f"{v} px"
    return _f(v)


def fullres_section(recs: list[dict]) -> list[str]:
    """Issue 17's figures of every edit beside the peers', its targets, its 100% crops."""
    recs = [r for r in recs if (r.get("quality") or {}).get("fullres")]
    if not recs:
        return []
    lines = ["## At the photo's own resolution (issue 17)", "", FULLRES_INTRO, "",
             "| scene | size | edit | device | preset | start | targets met | missed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in recs:
        ts = r.get("fullres_targets") or []
        missed = [t for t in ts if not t["met"]]
        what = ", ".join(f"{t['name']} {_fullres_value(t)} ({_target_cell(t)})"
                         for t in missed)
        w, h = r.get("image_size") or (0, 0)
        lines.append(f"| {r['scene']} | {w}x{h} | {r['mode']} | {r['device_name']} "
                     f"| {r['preset']} | {r.get('start', 'noise')} "
                     f"| {len(ts) - len(missed)}/{len(ts)} | {what or '-'} |")
    lines += ["", CROPS_NOTE, ""]
    for r in recs:
        lines += [(f"### {r['scene']} {r['mode']}: {r['edit'] or r['mode']} "
                  f"({r['device_name']}, {r['preset']}, from {r.get('start', 'noise')})"), "",
                  FULLRES_HEADER]
        lines += [_fullres_row(name, q) for name, q in (r.get("peers") or {}).items()]
        lines.append(_fullres_row(f"**MAGIC {r['preset']}**", r["quality"]))
        ts = r.get("fullres_targets") or []
        if ts:
            lines += ["", "| target | wanted | MAGIC | |", "|---|---|---|---|"]
            lines += [f"| {t['name']} | {t['target']} | {_fullres_value(t)} "
                      f"| {_target_cell(t)} |" for t in ts]
        if r.get("crops"):
            lines += ["", f"![{r['scene']} {r['mode']}: 100% crops]({r['crops']})"]
        lines.append("")
    return lines


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
    lines += [""]
    if any(r.get("peers") or r.get("targets") for r in recs):
        lines += peers_section(recs)
    lines += fullres_section(recs)
    lines += ["## Pictures", "", PICTURES_NOTE, ""]
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


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def marked_section(text: str, name: str) -> str | None:
    """The section of `text` between <!-- name:start --> and <!-- name:end -->, markers
    included (None when it has none)."""
    start, end = _markers(name)
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    return text[i:j + len(end)] if j >= 0 else None


def with_marked_section(text: str, name: str, body: str) -> str:
    """`text` with its marked section `name` replaced by `body` (markers added), or with it
    appended at the end when it has none."""
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    old = marked_section(text, name)
    if old is not None:
        return text.replace(old, block, 1)
    return (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"


# written by hand (findings) or by other benchmark scripts (layout-edits: benchmarks/layouts.py)
KEPT_SECTIONS = (FINDINGS, "layout-edits")


def _section_body(text: str, name: str) -> str | None:
    section = marked_section(text, name)
    if section is None:
        return None
    start, end = _markers(name)
    return section[len(start):-len(end)].strip("\n")


def keep_sections(old: str, new: str, names: tuple[str, ...] = KEPT_SECTIONS) -> str:
    """The regenerated report `new` with the marked sections of the previous one kept (where
    `new` has none, or only its empty place)."""
    for name in names:
        kept = _section_body(old, name)
        if kept and not _section_body(new, name):
            new = with_marked_section(new, name, kept)
    return new


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
    full = json.loads((index.parent / "fullsize.json").read_text(encoding="utf-8"))
    for n, e in full["scenes"].items():
        scenes.setdefault(n, {"licence": f"GPL-2+, {e['copyright']}; Debian package "
                                         f"{full['package']['name']}, {e['file']}"})
    scenes.setdefault("hummingbird", {"licence": full["hummingbird"]["licence"]})
    names = dict.fromkeys(r["scene"] for r in payload["records"])
    licences = {n: scenes.get(n, {}).get("licence", "") for n in names}
    out = Path(args[1])
    old = out.read_text(encoding="utf-8") if out.is_file() else ""
    out.write_text(keep_sections(old, markdown(payload, licences)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
