"""Measured layout edits (issue 12): the product's synthesize_layout beside a hand-made peer on
the bundled layout scenes (samples/index.json "layouts").

    python benchmarks/layouts.py [--scenes coffee,coins] [--edits rearrange,paint,remove]
        [--preset draft] [--resolution 160] [--samples 2] [--seed 0] [--weights untrained]
        [--out docs/benchmarks-layout] [--report docs/benchmarks.md]

Rows per edit:
- photo: the unedited photo (what doing nothing scores);
- peer: each changed label region, grown by PEER_GROW_PX, filled by PatchMatch
  (benchmarks.peers.inpaint) from the photo's pixels that carry that label only;
- product: Engine.synthesize_layout, one row per sample.

Figures: the label each pixel looks like, by an independent judge (benchmarks/label_judge.py,
fitted on the photo with its source map), against the target map: mean per-label IoU inside the
edit region (where the maps differ) and over the whole image; coherence and noise figure
(benchmarks/quality.py) in the edit region grown by 2 px; preservation: max abs difference
outside the pixels the row may change (the product's `touched`, the peer's holes); seconds.
Writes results.json and one picture grid per scene into --out, and the section between
<!-- layout-edits:start --> and <!-- layout-edits:end --> of --report (appended when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import label_judge
import peers
import quality
import report
from run import machine_info

SAMPLES = ROOT / "samples"
EDITS = ("rearrange", "paint", "remove")
PEER_GROW_PX = 2  # an artist grows each selection a little before healing it
REGION_GROW_PX = 2  # coherence and noise are measured on the edit region grown this much
SECTION = "layout-edits"


class BenchError(Exception):
    """A problem with the scenes or options; printed as one line."""


def load_scene(name: str) -> dict:
    from magic_server.labels.maps import read_label_maps

    index = json.loads((SAMPLES / "index.json").read_text(encoding="utf-8"))["scenes"]
    if name not in index or "layouts" not in index[name]:
        have = ", ".join(n for n, e in index.items() if "layouts" in e)
        raise BenchError(f"no layout scene {name!r}; the layout scenes are {have}")
    e = index[name]
    lay = e["layouts"]

    def rgb(rel: str) -> np.ndarray:
        return np.asarray(Image.open(SAMPLES / rel).convert("RGB"))

    source_rgb = rgb(lay["source"])
    targets, palette = {}, None
    for edit, rel in lay["targets"].items():
        maps = read_label_maps(source_rgb, rgb(rel))
        targets[edit] = maps.target
        source, palette = maps.source, maps.palette
    return {"name": name, "photo": rgb(e["image"]), "source": source, "targets": targets,
            "palette": palette, "edits": lay["edits"], "licence": e["licence"]}


# ---------------------------------------------------------------------------- the rows


def label_peer(photo: np.ndarray, source: np.ndarray, target: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(image, hole): each changed label region filled by PatchMatch from the photo's pixels of
    that label only (each label's fill runs on the photo itself, so a region moved onto the
    old place of another still finds its own pixels)."""
    changed = quality.dilate(source != target, PEER_GROW_PX)
    image = photo.copy()
    for k in np.unique(target[changed]):
        hole = changed & (target == k)
        filled = peers.inpaint(photo, hole, exclude=(source != k) & ~hole)
        image[hole] = filled[hole]
    return image, changed


def label_noise_figure(photo: np.ndarray, image: np.ndarray, region: np.ndarray,
                       source: np.ndarray, target: np.ndarray) -> float:
    """quality.sharpness's noise figure, but against the photo's own pixels of the labels the
    target puts in the region (weighted by their share there), not against what the region
    showed before: a removed coin must look like cloth, not like the coin."""
    hf_e, mf_e = quality._bands(image, region)
    hf_ref = mf_ref = total = 0.0
    for k, n in zip(*np.unique(target[region], return_counts=True)):
        where = (source == k) & ~region
        if where.any():
            hf, mf = quality._bands(photo, where)
            hf_ref, mf_ref, total = hf_ref + n * hf, mf_ref + n * mf, total + n
    if total == 0 or hf_ref <= 0 or mf_ref <= 0:
        return float("nan")
    hf_ref, mf_ref = hf_ref / total, mf_ref / total
    return float((hf_e / max(mf_e, 0.5 * mf_ref)) / (hf_ref / mf_ref))


def measure(photo: np.ndarray, image: np.ndarray, source: np.ndarray, target: np.ndarray,
            judge, region: np.ndarray, may_change: np.ndarray | None) -> dict:
    seen = judge.labels(image)
    grown = quality.dilate(region, REGION_GROW_PX)
    outside = ~may_change if may_change is not None else np.ones(region.shape, bool)
    diff = np.abs(image.astype(np.int16) - photo.astype(np.int16)).max(-1)
    return {
        "region_iou": label_judge.mean_iou(seen, target, region),
        "region_iou_per_label": label_judge.per_label_iou(seen, target, region),
        "image_iou": label_judge.mean_iou(seen, target),
        "coherence": quality.patch_realism(photo, image, grown).coherence_ratio,
        "noise_figure": label_noise_figure(photo, image, grown, source, target),
        "max_abs_outside": int(diff[outside].max()) if outside.any() else 0,
    }


def run_edit(engine, scene: dict, edit: str, judge, args) -> dict:
    from magic_server.engine.api import MODES, SynthesisOptions

    photo, source, target = scene["photo"], scene["source"], scene["targets"][edit]
    region = source != target
    rows = {"photo": measure(photo, photo, source, target, judge, region, None)}
    rows["photo"]["seconds"] = 0.0
    t0 = time.perf_counter()
    peer_image, hole = label_peer(photo, source, target)
    peer_s = time.perf_counter() - t0
    rows["peer"] = measure(photo, peer_image, source, target, judge, region, hole)
    rows["peer"]["seconds"] = peer_s
    options = SynthesisOptions(mode="layout" if "layout" in MODES else "synthesize",
                               preset=args.preset, samples=args.samples, seed=args.seed,
                               resolution=args.resolution)
    t0 = time.perf_counter()
    result = engine.synthesize_layout(photo, source, target, options)
    product_s = time.perf_counter() - t0
    for i, img in enumerate(result.images):
        rows[f"product {i + 1}"] = measure(photo, img, source, target, judge, region,
                                           result.touched)
        rows[f"product {i + 1}"]["seconds"] = product_s
    diversity = (quality.diversity(result.images, quality.dilate(region, REGION_GROW_PX))
                 if len(result.images) > 1 else None)
    return {"scene": scene["name"], "edit": edit, "description": scene["edits"][edit],
            "diversity": diversity,
            "changed_share": float(region.mean()), "touched_share": float(result.touched.mean())
            if result.touched is not None else 1.0, "iterations": result.iterations,
            "notes": list(result.notes), "rows": rows,
            "images": {"peer": peer_image, "samples": result.images}}


def judge_ceiling(judge, scene: dict) -> dict:
    """The judge on the photo against its own source map: over the whole image, and per edit
    over the labels the target puts in its region (each label's IoU where the photo has it:
    how well the judge knows those labels at all)."""
    seen = judge.labels(scene["photo"])
    per_label = label_judge.per_label_iou(seen, scene["source"])
    ceiling = {"image_iou": float(np.mean(list(per_label.values())))}
    for edit, target in scene["targets"].items():
        wanted = np.unique(target[scene["source"] != target])
        ceiling[f"{edit}_region_iou"] = float(np.mean([per_label[int(k)] for k in wanted]))
    return ceiling


# ---------------------------------------------------------------------------- pictures


ZOOM_TILE_H = 200
ZOOM_MARGIN_PX = 16


def _crop_box(region: np.ndarray) -> tuple[slice, slice]:
    ys, xs = np.nonzero(region)
    h, w = region.shape
    m = ZOOM_MARGIN_PX
    return (slice(max(0, ys.min() - m), min(h, ys.max() + 1 + m)),
            slice(max(0, xs.min() - m), min(w, xs.max() + 1 + m)))


def layout_grid(scene: dict, records: list[dict], zoom: bool = False) -> Image.Image:
    """One row per edit: photo | source map | target map | peer | product samples; with
    zoom, every tile is the edit region's bounding box (plus a margin), larger."""
    from magic_server.labels.clustering import colour_map

    pal = scene["palette"]
    height = ZOOM_TILE_H if zoom else report.TILE_H
    rows = []
    for rec in records:
        edit = rec["edit"]
        target = scene["targets"][edit]
        box = _crop_box(scene["source"] != target) if zoom else (slice(None), slice(None))
        named = [(scene["photo"], "photo"), (colour_map(scene["source"], pal), "source map"),
                 (colour_map(target, pal), f"target: {edit}"),
                 (rec["images"]["peer"], "peer (PatchMatch)")]
        named += [(s, f"product {i + 1}") for i, s in enumerate(rec["images"]["samples"])]
        rows.append([report._tile(np.ascontiguousarray(img[box]), caption, height)
                     for img, caption in named])
    gap = report.GAP
    width = max(sum(t.width for t in r) + gap * (len(r) - 1) for r in rows)
    tile_h = height + report.CAPTION_H
    grid = Image.new("RGB", (width, len(rows) * (tile_h + gap) - gap), (255, 255, 255))
    for j, r in enumerate(rows):
        x = 0
        for t in r:
            grid.paste(t, (x, j * (tile_h + gap)))
            x += t.width + gap
    return grid


# ---------------------------------------------------------------------------- the report


def _f(v, spec: str = "{:.2f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else spec.format(v)


def _product_mean(rows: dict, key: str) -> float:
    vals = [r[key] for name, r in rows.items() if name.startswith("product")]
    return float(np.mean(vals))


JUDGE_NOTE = (
    "- Judge: gradient-boosted trees over colour/texture features "
    "(`benchmarks/label_judge.py`), fitted on the photo with its source label map; it never "
    "sees the engine. *Region IoU*: mean per-label IoU of the judged labels against the "
    "target map inside the edit region (pixels whose label changes; a label seen there but "
    "not wanted counts 0); *image IoU*: the same over the whole image; *ceiling*: the judge "
    "on the photo against its own source map (region: the mean whole-photo IoU of the labels "
    "the target puts in the region), what a perfect edit could score. Coherence (main report, "
    "benchmarks/quality.py) on the edit region grown by {grow} px: lower is more natural, the "
    "photo itself ~0.5-1. Noise figure: the region's high frequencies against the photo's own "
    "pixels of the labels the target puts there (1 = like them, < 0.7 blurred, > 1.3 noisy). "
    "*Outside*: max abs difference outside the pixels the row declares it may change "
    "(product: `touched`; peer: its holes); 0 = bit-identical. Product figures are means over "
    "its samples; *diversity*: mean pairwise RMS difference between the samples in the region "
    "(8-bit levels)."
)


def section(payload: dict, findings: str) -> str:
    m = payload["machine"]
    lines = [
        "## Layout edits (label maps)", "",
        f"Generated by `{m['command']}` on {m['date']}.", "",
        (f"- CPU: {m['cpu']} ({m['cpu_count']} cores visible, torch threads {m['threads']}); "
        f"GPU: {m['cuda'] or 'none used'}; torch {m['torch']}, Python {m['python']}; whole run "
        f"{m['wall_s']:.0f} s"),
        (f"- Product: `Engine.synthesize_layout`, preset {payload['preset']}, working "
        f"resolution {payload['resolution']}, {payload['samples']} samples, seed "
        f"{payload['seed']}, on the CPU. **Classifier weights: {payload['weights']}.**"),
        ("- Peer (made by hand): each changed label region, grown by "
        f"{PEER_GROW_PX} px, filled by PatchMatch (`benchmarks.peers.inpaint`) from the "
        "photo's pixels of that label only (what an artist gets from Resynthesizer's heal "
        "with the sampling restricted to that label)."),
        JUDGE_NOTE.format(grow=REGION_GROW_PX), "",
        ("| scene | edit | changed | ceiling (region / image) | row | region IoU | image IoU "
        "| coherence | noise figure | outside | s / edit | diversity |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rec in payload["records"]:
        ceil = payload["ceilings"][rec["scene"]]
        head = (f"| {rec['scene']} | {rec['edit']}: {rec['description']} "
                f"| {rec['changed_share']:.1%} "
                f"| {_f(ceil[rec['edit'] + '_region_iou'])} / {_f(ceil['image_iou'])} ")
        rows = rec["rows"]
        shown = [("unedited photo", rows["photo"]), ("peer", rows["peer"])]
        product = {k: _product_mean(rows, k) for k in
                   ("region_iou", "image_iou", "coherence", "noise_figure", "seconds")}
        product["max_abs_outside"] = max(r["max_abs_outside"] for n, r in rows.items()
                                         if n.startswith("product"))
        shown.append(("**product**", product))
        for i, (name, r) in enumerate(shown):
            prefix = head if i == 0 else "| | | | "
            spread = _f(rec.get("diversity"), "{:.1f}") if name == "**product**" else ""
            lines.append(f"{prefix}| {name} | {_f(r['region_iou'])} | {_f(r['image_iou'])} "
                         f"| {_f(r['coherence'])} | {_f(r['noise_figure'])} "
                         f"| {r['max_abs_outside']} | {_f(r['seconds'], '{:.1f}')} | {spread} |")
    lines += ["", ("Pictures (each row: photo | source map | target map | peer | product "
                  "samples; `_zoom`: the same, cropped to the edit region):"), ""]
    for name, rel in payload["pictures"].items():
        lines += [f"![{name} layout edits]({rel})", ""]
    if findings.strip():
        lines += ["### What the pictures show", "", findings.strip(), ""]
    return "\n".join(lines)


def write_section(report_path: Path, body: str) -> None:
    old = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.with_marked_section(old, SECTION, body), encoding="utf-8")


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/layouts.py",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", help="comma-separated layout scenes (default: all)")
    ap.add_argument("--edits", default=",".join(EDITS), help="comma-separated edits")
    ap.add_argument("--preset", default="draft")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default="untrained",
                    help="checkpoint path or 'untrained' (default: untrained)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-layout")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--findings", type=Path,
                    help="a Markdown file whose text goes under 'What the pictures show' "
                         "(written after looking at them)")
    ap.add_argument("--rerender", action="store_true",
                    help="run nothing: rewrite the report section from OUT/results.json "
                         "(e.g. with --findings after looking at the pictures)")
    return ap.parse_args(argv)


def rerender(args: argparse.Namespace) -> int:
    results = args.out / "results.json"
    if not results.is_file():
        print(f"benchmarks/layouts.py: error: {results} not found; run without --rerender "
              "first", file=sys.stderr)
        return 2
    payload = json.loads(results.read_text(encoding="utf-8"))
    findings = args.findings.read_text(encoding="utf-8") if args.findings else ""
    write_section(args.report, section(payload, findings))
    print(f"rewrote the {SECTION} section of {args.report} from {results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if args.rerender:
        return rerender(args)
    torch.set_num_threads(args.threads)
    started = time.time()
    try:
        index = json.loads((SAMPLES / "index.json").read_text(encoding="utf-8"))["scenes"]
        names = (args.scenes.split(",") if args.scenes
                 else [n for n, e in index.items() if "layouts" in e])
        edits = args.edits.split(",")
        bad = sorted(set(edits) - set(EDITS))
        if bad:
            raise BenchError(f"unknown edit(s) {', '.join(bad)}; choose from {', '.join(EDITS)}")
        scenes = [load_scene(n) for n in names]
        from magic_server.engines import build_engine

        engine = build_engine(args.weights, "cpu", allow_download=True)
        args.out.mkdir(parents=True, exist_ok=True)
        records, ceilings, pictures = [], {}, {}
        for scene in scenes:
            judge = label_judge.LabelJudge(scene["photo"], scene["source"])
            ceilings[scene["name"]] = judge_ceiling(judge, scene)
            done = []
            for edit in edits:
                print(f"{scene['name']} {edit}: {scene['edits'][edit]}", flush=True)
                rec = run_edit(engine, scene, edit, judge, args)
                for name, r in rec["rows"].items():
                    print(f"  {name:<12} region IoU {_f(r['region_iou'])}  image IoU "
                          f"{_f(r['image_iou'])}  coherence {_f(r['coherence'])}  noise "
                          f"{_f(r['noise_figure'])}  outside {r['max_abs_outside']}  "
                          f"{r['seconds']:.1f} s", flush=True)
                done.append(rec)
            for zoom, suffix in ((False, ""), (True, "_zoom")):
                pic = args.out / f"{scene['name']}{suffix}.jpg"
                layout_grid(scene, done, zoom).save(pic, quality=88, optimize=True)
                pictures[scene["name"] + suffix] = Path(
                    os.path.relpath(pic, args.report.parent)).as_posix()
            records += done
    except BenchError as e:
        print(f"benchmarks/layouts.py: error: {e}", file=sys.stderr)
        return 2
    info = machine_info()
    info["wall_s"] = time.time() - started
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info["command"] = " ".join(["python benchmarks/layouts.py",
                                *(argv if argv is not None else sys.argv[1:])])
    payload = {"machine": info, "preset": args.preset, "resolution": args.resolution,
               "samples": args.samples, "seed": args.seed, "weights": engine.weights_label,
               "ceilings": ceilings, "pictures": pictures,
               "records": [{k: v for k, v in r.items() if k != "images"} for r in records]}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    findings = args.findings.read_text(encoding="utf-8") if args.findings else ""
    write_section(args.report, section(payload, findings))
    print(f"wrote {args.out / 'results.json'}, {len(pictures)} picture(s) and the "
          f"{SECTION} section of {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
