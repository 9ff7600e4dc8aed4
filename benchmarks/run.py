"""Measured speed and quality of MAGIC edits on the sample scenes.

    python benchmarks/run.py [--quick] [--device cpu|cuda|auto|all] [--weights PATH|untrained]
                             [--scenes a,b] [--modes move,remove] [--edits coffee:move,...]
                             [--presets tiny,draft] [--start noise,cut-paste,cut-paste+heal]
                             [--report docs/benchmarks.md] [--no-report] [--no-peers]
                             [--peers-only] [--fullsize [--cache DIR] [--hummingbird PATH]]

Runs scenes x edits x presets through the real engine on the CPU (and on the GPU when the machine
has one, with --device all or auto), measures speed (seconds per iteration, iteration cost in
classifier forwards at the same batch and size, time to first preview, time to result, peak RAM
and GPU memory) and quality (benchmarks/quality.py) beside the hand-made peers of the same edit
(benchmarks/peers.py: the photo, cut-paste, cut-paste + heal), checks issue 10's targets, prints
a compact table per edit, then writes results.json, a Markdown report and one picture grid per
scene and device. --quick: tiny preset, low resolution, 2 scenes, CPU. --no-report: only the
printed tables (for development: e.g. --edits coffee:move --presets draft --samples 2
--no-report).

--fullsize: the full-size scenes of samples/fullsize.json instead of the bundled ones
(benchmarks/fullsize.py: four mate-backgrounds photographs of 2.5-4 MP fetched with apt-get into
a cache folder, and the MAGIC paper's hummingbird from --hummingbird PATH, skipped with a message
when absent), each run at the photo's own resolution (the engine works on the edit's region);
default working resolution 224 (the product's), one sample. Every run also measures issue 17's
full-resolution figures (seam, edges, changed outside, object structure; a removal's changes
beyond its grown selection) beside the peers', checks their targets, and the report shows 100%
crops of the old and the new place beside the peers'. --start takes several starts (e.g.
noise,cut-paste: masks only and from the composite).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fullres_quality as fq
import fullsize as fullsize_mod
import peers as peers_mod
import quality
import report
from process_memory import rss_mb
from scene import Scene

SAMPLES = ROOT / "samples"
MODES = ("move", "copy", "reshape", "remove")
# --quick: two scenes, one edit each, the tiny preset cut to a few iterations at 64 px, CPU only.
QUICK = {"edits": "coffee:move,chelsea:remove", "presets": ["tiny"], "iterations": 12,
         "resolution": 64, "samples": 2, "devices": ["cpu"]}


STARTS = ("noise", "cut-paste", "cut-paste+heal")


def start_image(scene: Scene, mode: str, start: str) -> np.ndarray | None:
    """The init_image for --start (None: from noise)."""
    if start == "noise":
        return None
    guide = scene.guides[mode]
    t = known_transform(scene, mode)
    if start == "cut-paste":
        return None if mode == "remove" else peers_mod.cut_paste(
            scene.image, scene.source_mask, guide, mode, transform=t)
    return peers_mod.cut_paste_heal(scene.image, scene.source_mask, guide, mode, transform=t)


def known_transform(scene: Scene, mode: str) -> peers_mod.Transform | None:
    """The edit's transform when the scene records it (full-size scenes), else None."""
    t = scene.transforms.get(mode)
    return None if t is None else peers_mod.Transform(*t)


def edit_transform(scene: Scene, mode: str):
    """The transform that carries the object from the source to the guide (for the object
    structure figure): the scene's record, or the peers' estimate from the masks."""
    if mode == "remove":
        return None
    t = known_transform(scene, mode)
    return t if t is not None else peers_mod.estimate_transform(scene.source_mask,
                                                                scene.guides[mode])


class BenchError(Exception):
    """A user-facing problem (missing scene, bad device...): printed as one line."""


def load_scenes(names: list[str] | None, root: Path = SAMPLES) -> list[Scene]:
    index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    available = index["scenes"]
    names = names or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise BenchError(f"unknown scene(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(available)}")
    scenes = []
    for n in names:
        e = available[n]
        img = np.array(Image.open(root / e["image"]).convert("RGB"))

        def mask(rel: str) -> np.ndarray:
            return np.asarray(Image.open(root / rel).convert("L")) > 127

        scenes.append(Scene(n, img, mask(e["source_mask"]),
                            {m: mask(p) for m, p in e["guides"].items()},
                            e.get("licence", ""), e.get("edits", {})))
    return scenes


# ---------------------------------------------------------------------------- memory probes


@dataclass
class PeakMemory:
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None


@contextlib.contextmanager
def peak_memory(device):
    """Peak resident memory (sampled every 20 ms) and peak GPU memory over a block."""
    import torch

    stats = PeakMemory(rss_mb())
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            stats.peak_rss_mb = max(stats.peak_rss_mb, rss_mb())

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join()
        stats.peak_rss_mb = max(stats.peak_rss_mb, rss_mb())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            stats.peak_gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20


# ---------------------------------------------------------------------------- one edit


@dataclass
class EditRecord:
    scene: str
    mode: str
    edit: str
    device: str
    device_name: str
    preset: str
    resolution: int
    working_size: tuple[int, int]
    samples: int
    iterations: int
    mask_net_steps: int
    weights: str
    weights_trained: bool
    seconds_per_iteration: float
    forward_seconds: float
    iteration_cost_forwards: float
    first_preview_s: float | None
    result_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    load_avg: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before / after the edit
    quality: dict = field(default_factory=dict)
    picture: str = ""
    start: str = "noise"  # what x' started from: noise, cut-paste, cut-paste+heal
    peers: dict = field(default_factory=dict)  # peer name -> the same quality figures
    targets: list = field(default_factory=list)  # issue 10's targets: met / missed by how much
    fullres_targets: list = field(default_factory=list)  # issue 17's (full resolution)
    crops: str = ""  # 100% crops of the old and new place beside the peers' (report picture)
    image_size: tuple[int, int] = (0, 0)  # the photo's (width, height)


def time_forward(classifier, device, batch: int, size: tuple[int, int], repeats: int = 3) -> float:
    """Seconds for one classifier forward (with features, no gradient) at this batch and size."""
    import torch

    x = torch.rand(batch, 3, *size, device=device)
    with torch.no_grad():
        classifier.forward_with_features(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            classifier.forward_with_features(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats


def run_edit(engine, scene: Scene, mode: str, preset: str, resolution: int, samples: int,
             seed: int, iterations: int | None, log, *, init_image: np.ndarray | None = None,
             start: str = "noise") -> tuple[EditRecord, list[np.ndarray]]:
    from magic_server.engine.api import SynthesisOptions
    from magic_server.engine.presets import resolve_schedule
    from magic_server.engine.tensors import working_size

    schedule = resolve_schedule(preset, iterations)
    preview_every = max(1, schedule.iterations // 4)
    opts = SynthesisOptions(samples=samples, preset=preset, iterations=iterations, seed=seed,
                            mode=mode, resolution=resolution, preview_every=preview_every)
    marks: dict[str, float] = {}
    synth_times: list[float] = []
    last_print = [0.0]

    mask_steps = [0]  # mask-net steps the engine actually ran (0: no mask network)

    def on_progress(p) -> None:
        now = time.perf_counter()
        if p.stage == "mask-net":
            mask_steps[0] = max(mask_steps[0], p.iteration)
        else:  # every optimisation iteration, whatever its level's stage name
            synth_times.append(now)
            if p.previews is not None and "first_preview" not in marks:
                marks["first_preview"] = now
        if now - last_print[0] > 5 or (p.stage == "synthesis" and p.iteration == p.total):
            last_print[0] = now
            log(f"    {p.stage} {p.iteration}/{p.total}  {now - marks['start']:.0f}s")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    with peak_memory(engine.device) as mem:
        marks["start"] = time.perf_counter()
        extra = {} if init_image is None else {"init_image": init_image}
        result = engine.synthesize(scene.image, scene.source_mask, scene.guides[mode], opts,
                                   on_progress, **extra)
        marks["end"] = time.perf_counter()
    size = working_size(*scene.image.shape[:2], resolution)
    fwd = time_forward(engine.classifier, engine.device, samples, size)
    if len(synth_times) >= 2:
        spi = (synth_times[-1] - synth_times[0]) / (len(synth_times) - 1)
    else:
        spi = (marks["end"] - marks["start"]) / max(1, result.iterations)
    desc = engine.describe()
    rec = EditRecord(
        scene=scene.name, mode=mode, edit=scene.edits.get(mode, ""), device=str(engine.device),
        device_name=desc.device_name, preset=preset,
        resolution=resolution, working_size=size, samples=samples,
        iterations=result.iterations, mask_net_steps=mask_steps[0],
        weights=engine.weights_label, weights_trained=desc.weights_loaded,
        seconds_per_iteration=spi, forward_seconds=fwd,
        iteration_cost_forwards=spi / fwd if fwd > 0 else float("nan"),
        first_preview_s=(marks["first_preview"] - marks["start"]
                         if "first_preview" in marks else None),
        result_s=marks["end"] - marks["start"],
        peak_rss_mb=mem.peak_rss_mb, peak_gpu_mb=mem.peak_gpu_mb,
        load_avg=(load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0),
        start=start)
    return rec, result.images


def engine_footprint(scene: Scene, mode: str, init_image: np.ndarray | None = None
                     ) -> np.ndarray:
    """Every pixel the engine declares it may change for this edit (edit region, rim, feather
    band); outside it the engine promises the photo's pixels bit for bit. A masks-only move,
    copy or reshape starts from the object moved by the masks (engine/object_transfer.py),
    as from a composite."""
    from magic_server.engine.edit_plan import plan_edit
    from magic_server.engine.object_transfer import transfer_start

    guide = scene.guides[mode]
    if init_image is None:
        init_image = transfer_start(scene.image, scene.source_mask, guide, mode)
    if init_image is not None:
        return plan_edit(scene.source_mask, guide, scene.image, init_image, mode).touched()
    return plan_edit(scene.source_mask, guide, mode=mode).touched()


def measure_quality(scene: Scene, mode: str, images: list[np.ndarray],
                    segmenter: quality.ObjectSegmenter, *, footprint: np.ndarray | None = None,
                    init_image: np.ndarray | None = None) -> dict:
    """Every quality figure of one edit's samples (means over the samples, worst case for
    preservation), judged against the photo. Preservation is judged outside `footprint`
    (default: the engine's declared footprint for this edit and start image)."""
    guide = scene.guides[mode]
    region = quality.edit_region(scene.source_mask, guide)
    if footprint is None:
        footprint = engine_footprint(scene, mode, init_image)
    removal = mode == "remove"
    removal_seg = None
    if removal:
        removal_seg = _removal_segmenter(scene, guide)
    transform = edit_transform(scene, mode)
    per_sample = []
    for img in images:
        a = quality.guide_adherence(scene.image, scene.source_mask, guide, img, segmenter)
        p = quality.preservation(scene.image, img, footprint)
        r = quality.patch_realism(scene.image, img, region)
        n = quality.sharpness(scene.image, img, region)
        s = {"adherence": asdict(a), "preservation": asdict(p), "realism": asdict(r),
             "sharpness": asdict(n)}
        if removal:
            s["object_left"] = quality.object_left(removal_seg, img, scene.source_mask, guide)
        s["fullres"] = asdict(fq.fullres_figures(scene.image, img, scene.source_mask,
                                                      guide, mode, transform))
        per_sample.append(s)

    def mean(group: str, key: str) -> float:
        return float(np.mean([s[group][key] for s in per_sample]))

    out = {
        "guide_iou": mean("adherence", "guide_iou"),
        "changed_agreement": mean("adherence", "changed_agreement"),
        "unknown_fraction": mean("adherence", "unknown_fraction"),
        "baseline_iou": per_sample[0]["adherence"]["baseline_iou"],
        "baseline_agreement": per_sample[0]["adherence"]["baseline_agreement"],
        "segmenter_ceiling_iou": per_sample[0]["adherence"]["segmenter_iou_on_source"],
        "psnr_outside": min(s["preservation"]["psnr_outside"] for s in per_sample),
        "max_abs_outside": max(s["preservation"]["max_abs_outside"] for s in per_sample),
        "outside_identical": all(s["preservation"]["identical"] for s in per_sample),
        "coherence_ratio": mean("realism", "coherence_ratio"),
        "completeness_ratio": mean("realism", "completeness_ratio"),
        "noise_figure": mean("sharpness", "noise_figure"),
        "diversity": quality.diversity(images, region),
        "object_left": (float(np.mean([s["object_left"] for s in per_sample]))
                        if removal else None),
        "fullres": fullres_summary([s["fullres"] for s in per_sample]),
        "per_sample": per_sample,
    }
    return out


def _nanmean(values: list) -> float | None:
    """Mean of the defined values (nan when none is: nothing to measure)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def fullres_summary(per_sample: list[dict]) -> dict:
    """Issue 17's figures over the samples: means (seam, edges, object structure), worst case
    for what changed outside and beyond a removal's grown selection."""
    out = {k: _nanmean([s.get(k) for s in per_sample])
           for k in ("seam", "edges", "edges_whole_ring", "edges_object", "changed_share",
                     "halo")}
    out["changed_outside"] = max(s["changed_outside"] for s in per_sample)
    out["outside_mean_abs"] = max(s.get("outside_mean_abs", 0.0) for s in per_sample)
    out["outside_max_abs"] = max(s.get("outside_max_abs", 0) for s in per_sample)
    structure = [s["object_structure"] for s in per_sample]
    out["object_structure"] = (None if all(v is None for v in structure)
                               else _nanmean(structure))
    beyond = [s["beyond_selection"] for s in per_sample if s["beyond_selection"] is not None]
    out["beyond_selection_px"] = max(b["pixels"] for b in beyond) if beyond else None
    out["beyond_selection"] = max(b["share"] for b in beyond) if beyond else None
    out["beyond_grow_px"] = beyond[0]["grow_px"] if beyond else None
    out["beyond_farthest_px"] = max(b["farthest_px"] for b in beyond) if beyond else None
    return out


_REMOVAL_SEGMENTERS: dict[tuple[str, bytes], quality.ObjectSegmenter] = {}


def _removal_segmenter(scene: Scene, guide: np.ndarray) -> quality.ObjectSegmenter:
    """The removed object's own segmenter, fitted once per scene and guide."""
    key = (scene.name, np.packbits(guide).tobytes())
    if key not in _REMOVAL_SEGMENTERS:
        _REMOVAL_SEGMENTERS[key] = quality.removal_segmenter(scene.image, scene.source_mask,
                                                             guide)
    return _REMOVAL_SEGMENTERS[key]


def measure_peers(scene: Scene, mode: str, segmenter: quality.ObjectSegmenter
                  ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """The hand-made peers of one edit and their quality figures (same metrics)."""
    guide = scene.guides[mode]
    images = peers_mod.peers(scene.image, scene.source_mask, guide, mode,
                             transform=known_transform(scene, mode))
    # a peer promises nothing about the engine's footprint: it is judged outside the edit
    # region (source and guide grown by 4% of the short side)
    region = quality.edit_region(scene.source_mask, guide)
    figures = {}
    for name, img in images.items():
        q = measure_quality(scene, mode, [img], segmenter, footprint=region)
        q.pop("per_sample")
        figures[name] = q
    return figures, images


# ---------------------------------------------------------------------------- targets

HEAL = "cut-paste + heal"


def _target(name: str, want: str, value, bound, met: bool, missed_by) -> dict:
    return {"name": name, "target": want, "value": value, "bound": bound, "met": bool(met),
            "missed_by": None if met else missed_by}


def targets(q: dict, peer_q: dict[str, dict], mode: str) -> list[dict]:
    """Issue 10's targets for one edit, each met or missed by how much (q: the product's
    figures, peer_q: the peers' figures of the same edit)."""
    out = []
    heal = peer_q.get(HEAL)
    if heal is not None:
        b = heal["coherence_ratio"]
        v = q["coherence_ratio"]
        out.append(_target("coherence", f"<= {HEAL}'s ({b:.2f})", v, b, v <= b, v - b))
    v = q["completeness_ratio"]
    out.append(_target("completeness", "<= 1.1", v, 1.1, v <= 1.1, v - 1.1))
    ceiling = q["segmenter_ceiling_iou"]
    b = 0.8 * ceiling
    v = q["guide_iou"]
    out.append(_target("guide IoU", f">= 0.8 x ceiling ({b:.2f})", v, b, v >= b, b - v))
    v = q["noise_figure"]
    out.append(_target("noise figure", "0.7-1.3", v, (0.7, 1.3), 0.7 <= v <= 1.3,
                       0.7 - v if v < 0.7 else v - 1.3))
    out.append(_target("outside", "bit-identical", q["max_abs_outside"], 0,
                       q["outside_identical"], q["max_abs_outside"]))
    v = q["diversity"]
    if not (isinstance(v, float) and math.isnan(v)):
        out.append(_target("diversity", "> 0", v, 0.0, v > 0, 0.0 - v))
    if mode == "remove":
        v = q["object_left"]
        out.append(_target("object left", "<= 5%", v, 0.05, v <= 0.05, v - 0.05))
        v = q["coherence_ratio"]
        out.append(_target("coherence (remove)", "<= 1.0", v, 1.0, v <= 1.0, v - 1.0))
    return out


FULLRES_TARGETS = {"seam": 1.2, "edges": 1.5, "changed outside": 0.001,
                   "object structure": 0.8, "beyond selection": 0}


def fullres_targets(q: dict, mode: str) -> list[dict]:
    """Issue 17's targets for one edit (item 5), each met or missed by how much. An undefined
    seam (nothing changed outside the masks) or edges (no fill) has nothing to miss."""
    f = q["fullres"]
    out = []
    for name, key in (("seam", "seam"), ("edges", "edges")):
        v, b = f[key], FULLRES_TARGETS[name]
        undefined = v is None or math.isnan(v)
        out.append(_target(name, f"<= {b}", v, b, undefined or v <= b, v - b))
    v, b = f["changed_outside"], FULLRES_TARGETS["changed outside"]
    out.append(_target("changed outside", "<= 0.1%", v, b, v <= b, v - b))
    if mode == "move" and f.get("object_structure") is not None:
        v, b = f["object_structure"], FULLRES_TARGETS["object structure"]
        out.append(_target("object structure", f">= {b}", v, b,
                           not math.isnan(v) and v >= b, b - v))
    if mode == "remove" and f.get("beyond_selection_px") is not None:
        v = f["beyond_selection_px"]
        out.append(_target("beyond selection", "0 px beyond the selection grown by 2% of "
                           "the hole's diameter", v, 0, v == 0, v))
    return out


def targets_summary(ts: list[dict]) -> str:
    missed = [t for t in ts if not t["met"]]
    if not missed:
        return f"all {len(ts)} met"
    parts = []
    for t in missed:
        by = t["missed_by"]
        if t["name"] == "outside":
            parts.append(f"outside changed (max abs {by})")
        elif t["name"] == "beyond selection":
            parts.append(f"{by} px changed beyond the grown selection")
        elif t["name"] == "changed outside":
            parts.append(f"changed outside {t['value']:.2%} (by {by:.2%})")
        elif t["name"] == "object left":
            parts.append(f"object left {t['value']:.1%} (by {by:.1%})")
        else:
            parts.append(f"{t['name']} {t['value']:.2f} (by {by:.2f})")
    return f"{len(ts) - len(missed)}/{len(ts)} met; missed: " + ", ".join(parts)


# ---------------------------------------------------------------------------- printed table


def _fmt(v, spec: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return spec.format(v)


def compact_table(rec: EditRecord) -> str:
    """Product vs peers, every metric, one line each; then the targets."""
    rows = [(name, q) for name, q in rec.peers.items()]
    rows.append((f"MAGIC {rec.preset} ({rec.start})", rec.quality))
    title = (f"{rec.scene} {rec.mode} [{rec.preset}, {rec.resolution}px, {rec.samples} "
             f"samples, from {rec.start}, {rec.result_s:.0f} s], weights: {rec.weights}")
    lines = _table_lines(title, rows)
    if rec.targets:
        lines.append("targets: " + targets_summary(rec.targets))
    lines += _fullres_lines(rows)
    if rec.fullres_targets:
        lines.append("full-resolution targets: " + targets_summary(rec.fullres_targets))
    return "\n".join(lines)


def _fullres_lines(rows: list[tuple[str, dict]]) -> list[str]:
    head = (f"{'full resolution':<22} {'seam':>6} {'edges':>6} {'ring':>6} {'edg.obj':>7} "
            f"{'outside':>8} {'struct.':>7} {'halo':>5} {'beyond sel.':>11}")
    lines = [head]
    for name, q in rows:
        f = q.get("fullres")
        if not f:
            continue
        beyond = f.get("beyond_selection_px")
        lines.append(f"{name[:22]:<22} {_fmt(f['seam']):>6} {_fmt(f['edges']):>6} "
                     f"{_fmt(f.get('edges_whole_ring')):>6} "
                     f"{_fmt(f['edges_object']):>7} {_fmt(f['changed_outside'], '{:.2%}'):>8} "
                     f"{_fmt(f.get('object_structure')):>7} {_fmt(f.get('halo'), '{:.1f}'):>5} "
                     f"{'-' if beyond is None else f'{beyond} px':>11}")
    return lines


def _table_lines(title: str, rows: list[tuple[str, dict]]) -> list[str]:
    head = (f"{'row':<22} {'coher.':>6} {'compl.':>6} {'IoU/ceil':>9} {'noise':>5} "
            f"{'outside':>9} {'divers.':>7} {'obj.left':>8}")
    lines = [title, head]
    for name, q in rows:
        outside = "identical" if q["outside_identical"] else f"max {q['max_abs_outside']}"
        iou_ = f"{_fmt(q['guide_iou'])}/{_fmt(q['segmenter_ceiling_iou'])}"
        lines.append(f"{name[:22]:<22} {_fmt(q['coherence_ratio']):>6} "
                     f"{_fmt(q['completeness_ratio']):>6} {iou_:>9} "
                     f"{_fmt(q['noise_figure']):>5} {outside:>9} "
                     f"{_fmt(q['diversity'], '{:.1f}'):>7} "
                     f"{_fmt(q.get('object_left'), '{:.1%}'):>8}")
    return lines


def print_peers_only(scenes: list[Scene], plan: dict[str, list[str]], log) -> None:
    """--peers-only: the bar the product must clear, for every planned edit (no engine)."""
    for scene in scenes:
        segmenter = quality.ObjectSegmenter(scene.image, scene.source_mask)
        for mode in plan[scene.name]:
            figures, _ = measure_peers(scene, mode, segmenter)
            rows = list(figures.items())
            log("\n".join(_table_lines(f"{scene.name} {mode}: {scene.edits.get(mode, mode)}",
                                        rows) + _fullres_lines(rows)))


# ---------------------------------------------------------------------------- the run


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def edit_plan(edits: str | None, scenes: str | None, modes: str | None,
              available: list[str] | None = None) -> dict[str, list[str]]:
    """{scene: [edits]} from --edits pairs, or from --scenes x --modes (default: all x all;
    `available`: the scene names to default to, else samples/index.json's)."""
    if edits:
        plan: dict[str, list[str]] = {}
        for pair in edits.split(","):
            scene, sep, mode = pair.strip().partition(":")
            if not sep or not scene or not mode:
                raise BenchError(f"--edits wants scene:edit pairs, got {pair!r}")
            plan.setdefault(scene, []).append(mode)
    else:
        if available is None:
            index = json.loads((SAMPLES / "index.json").read_text(encoding="utf-8"))
            available = list(index["scenes"])
        names = scenes.split(",") if scenes else list(available)
        plan = {n: modes.split(",") if modes else list(MODES) for n in names}
    bad = sorted({m for ms in plan.values() for m in ms if m not in MODES})
    if bad:
        raise BenchError(f"unknown edit(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    return plan


def resolve_devices(choice: str) -> list[str]:
    import torch

    if choice == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if choice == "auto":
        return ["cuda"] if torch.cuda.is_available() else ["cpu"]
    if choice == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA GPU here; use --device cpu or all")
    return [choice]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a few minutes on a small CPU: tiny preset, 64 px, 2 scenes, CPU only")
    ap.add_argument("--device", default="all", choices=["all", "auto", "cpu", "cuda"],
                    help="all: the CPU and the GPU when there is one (default)")
    ap.add_argument("--weights", default=None,
                    help="checkpoint path, 'untrained', or omit for the installed weights "
                         "(falls back to untrained, said in the report, when none are installed)")
    ap.add_argument("--scenes", help="comma-separated scene names (default: all)")
    ap.add_argument("--modes", help=f"comma-separated edits (default: {','.join(MODES)})")
    ap.add_argument("--edits", help="comma-separated scene:edit pairs, e.g. coffee:move,"
                                    "rocket:remove (instead of --scenes x --modes)")
    ap.add_argument("--presets", help="comma-separated presets (default: tiny on CPU, "
                                      "draft on GPU)")
    ap.add_argument("--resolution", type=int, help="working resolution (default 96 CPU, 224 GPU)")
    ap.add_argument("--samples", type=int, default=None, help="samples per edit (default 2 CPU,"
                                                               " 3 GPU)")
    ap.add_argument("--iterations", type=int, default=None, help="override preset iterations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for results.json (default out/benchmarks, with --fullsize "
                         "out/benchmarks-fullsize)")
    ap.add_argument("--report", type=Path, default=None,
                    help="Markdown report path (default OUT/report.md); pictures go in a "
                         "folder named like the report without .md (docs/benchmarks.md -> "
                         "docs/benchmarks/)")
    ap.add_argument("--no-report", action="store_true",
                    help="write nothing: print the product-vs-peers table of each edit only")
    ap.add_argument("--peers-only", action="store_true",
                    help="print the hand-made peers' figures for the planned edits and stop "
                         "(no engine, nothing written): the bar to clear")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip the hand-made peers (and the targets that compare with them)")
    ap.add_argument("--start", default="noise",
                    help="what the product's x' starts from, one or several comma-separated: "
                         "noise (default: masks only), cut-paste (the artist's pasted layer) "
                         "or cut-paste+heal; removals start from noise with cut-paste and from "
                         "the inpainted photo with cut-paste+heal")
    ap.add_argument("--fullsize", action="store_true",
                    help="the full-size scenes (samples/fullsize.json: mate-backgrounds "
                         "photographs fetched with apt-get, the MAGIC hummingbird from "
                         "--hummingbird) at the photo's own resolution, instead of the bundled "
                         "ones")
    add_fullsize_sources(ap)
    ap.add_argument("--save-results", action="store_true",
                    help="also save each edit's first sample as a full-size PNG beside the "
                         "report's pictures (to look at in GIMP at 100%%)")
    ap.add_argument("--crop", type=int, default=384,
                    help="side of the 100%% crops of the old and new place in the report")
    args = ap.parse_args(argv)
    starts = [x.strip() for x in args.start.split(",") if x.strip()]
    bad = [x for x in starts if x not in STARTS]
    if bad or not starts:
        ap.error(f"--start: unknown start(s) {', '.join(bad) or '(none)'}; choose from "
                 f"{', '.join(STARTS)}")
    args.starts = starts
    return args


def add_fullsize_sources(ap: argparse.ArgumentParser) -> None:
    """--cache, --deb and --hummingbird: where --fullsize finds its photographs."""
    ap.add_argument("--cache", type=Path, default=None,
                    help="--fullsize: folder for the fetched photographs (default "
                         "$MAGIC_FULLSIZE_CACHE or ~/.cache/magic-for-gimp/fullsize)")
    ap.add_argument("--deb", type=Path, default=None,
                    help="--fullsize: an already downloaded mate-backgrounds .deb")
    ap.add_argument("--hummingbird", default=None,
                    help="--fullsize: the MAGIC paper's repository folder (input_images/, "
                         "labels/); default $MAGIC_HUMMINGBIRD; without it the scene is skipped")


def load_fullsize(plan: dict[str, list[str]], args: argparse.Namespace, log) -> list[Scene]:
    """The planned full-size scenes; edits a scene has no guide for (the hummingbird has only
    its move) are dropped from the plan."""
    data = fullsize_mod.load_scenes(list(plan), cache=args.cache, deb=args.deb,
                                    hummingbird=args.hummingbird, log=log)
    scenes = list(data)
    for name in list(plan):
        sc = next((x for x in scenes if x.name == name), None)
        if sc is None:
            del plan[name]
            continue
        dropped = [m for m in plan[name] if m not in sc.guides]
        if dropped:
            log(f"{name}: no {', '.join(dropped)} edit (it has {', '.join(sc.guides)})")
        plan[name] = [m for m in plan[name] if m in sc.guides]
    return scenes


def load_engine(device_name: str, weights: str | None, log):
    """The engine on the named weights, or the installed ones, else random ones (logged)."""
    from magic_server.devices import resolve_device
    from magic_server.engines import Fallback, build_engine
    from magic_server.weights.errors import WeightsError

    try:
        return build_engine(weights, resolve_device(device_name), fallback=Fallback.UNTRAINED,
                            say=log)
    except WeightsError as e:
        raise BenchError(str(e)) from None


def _inside_repo_not_out(path: Path) -> bool:
    p = path.resolve()
    return p.is_relative_to(ROOT) and not p.is_relative_to(ROOT / "out")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out or ROOT / "out" / ("benchmarks-fullsize" if args.fullsize
                                            else "benchmarks")
    report_path: Path = args.report or out / "report.md"

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        devices = QUICK["devices"] if args.quick else resolve_devices(args.device)
        if args.fullsize:
            if not args.no_report and _inside_repo_not_out(report_path):
                log("note: the report's pictures are crops of the full-size photographs "
                    "(mate-backgrounds, GPL-2+; the hummingbird, no licence stated): keep "
                    "them out of the repository")
            plan = edit_plan(args.edits, args.scenes, args.modes,
                             available=fullsize_mod.scene_names())
            scenes = load_fullsize(plan, args, log)
            if not scenes:
                raise BenchError("no full-size scene to run")
        else:
            plan = edit_plan(args.edits or (QUICK["edits"] if args.quick else None),
                             args.scenes, args.modes)
            scenes = load_scenes(list(plan))
        if args.peers_only:
            print_peers_only(scenes, plan, log)
            return 0
        iterations = args.iterations or (QUICK["iterations"] if args.quick else None)
        pictures_dir = report_path.with_suffix("")
        if not args.no_report:
            out.mkdir(parents=True, exist_ok=True)
            pictures_dir.mkdir(parents=True, exist_ok=True)
        records: list[EditRecord] = []
        started = time.time()
        info: dict = {"wall_s": 0.0}
        peer_cache: dict[tuple[str, str], tuple[dict, dict]] = {}
        for dev in devices:
            gpu = dev != "cpu"
            presets = (args.presets.split(",") if args.presets
                       else QUICK["presets"] if args.quick else ["draft" if gpu else "tiny"])
            resolution = args.resolution or (QUICK["resolution"] if args.quick
                                             else 224 if gpu or args.fullsize else 96)
            samples = args.samples or (QUICK["samples"] if args.quick else 1 if args.fullsize
                                       else 3 if gpu else 2)
            engine = load_engine(dev, args.weights, log)
            engine.warm_up()
            log(f"{dev}: {engine.describe().device_name}, weights: {engine.weights_label}")
            for scene in scenes:
                segmenter = quality.ObjectSegmenter(scene.image, scene.source_mask)
                grid_rows = []
                for preset, mode, start in ((p, m, st) for p in presets
                                            for m in plan[scene.name] for st in args.starts):
                    if start == "cut-paste" and mode == "remove" and "noise" in args.starts:
                        # a removal has nothing to paste: from cut-paste is from noise
                        log(f"  {scene.name} {mode} from cut-paste: the same edit as from "
                            f"noise (nothing to paste), not run twice")
                        continue
                    log(f"  {scene.name} {mode} [{preset}, {resolution}px, {samples} "
                        f"samples, from {start}]")
                    init = start_image(scene, mode, start)
                    rec, images = run_edit(engine, scene, mode, preset, resolution,
                                           samples, args.seed, iterations, log,
                                           init_image=init, start=start)
                    rec.image_size = (scene.image.shape[1], scene.image.shape[0])
                    rec.quality = measure_quality(scene, mode, images, segmenter,
                                                  init_image=init)
                    heal_img = None
                    if not args.no_peers:
                        key = (scene.name, mode)
                        if key not in peer_cache:
                            peer_cache[key] = measure_peers(scene, mode, segmenter)
                        rec.peers, peer_images = peer_cache[key]
                        heal_img = peer_images.get(HEAL)
                    rec.targets = targets(rec.quality, rec.peers, mode)
                    rec.fullres_targets = fullres_targets(rec.quality, mode)
                    log(f"    {rec.seconds_per_iteration:.3f} s/it "
                        f"({rec.iteration_cost_forwards:.1f} forwards), result "
                        f"{rec.result_s:.1f} s")
                    log(compact_table(rec))
                    records.append(rec)
                    if args.no_report:
                        continue
                    grid_rows.append((f"{mode} ({preset}, {start})", scene.guides[mode],
                                      images, rec, heal_img))
                    rows = ([] if args.no_peers else
                            [(n, im) for n, im in peer_cache[(scene.name, mode)][1].items()
                             if n != "photo"])
                    crops = pictures_dir / (f"{scene.name}_{mode}_{preset}_{start}_{dev}"
                                            "_crops.jpg")
                    report.crops_picture(scene.image, scene.source_mask, scene.guides[mode],
                                         rows + [(f"MAGIC {preset} from {start}",
                                                  images[0])],
                                         size=args.crop, rim_from=images[0]).save(
                        crops, quality=92, subsampling=0)
                    rec.crops = os.path.relpath(crops, report_path.parent)
                    if args.save_results:
                        Image.fromarray(images[0]).save(
                            crops.with_name(crops.name.replace("_crops.jpg", "_result.png")))
                    # picture and report after every edit: a cut-short run keeps its work
                    pic = pictures_dir / f"{scene.name}_{dev}.jpg"
                    report.picture_grid(scene.image, scene.source_mask, grid_rows).save(
                        pic, quality=85, optimize=True)
                    rec.picture = os.path.relpath(pic, report_path.parent)
                    info = write_outputs(records, scenes, args, argv, started, out,
                                         report_path)
        if args.no_report:
            log(f"done in {time.time() - started:.0f} s (--no-report: nothing written)")
            return 0
        log(f"wrote {out / 'results.json'} and {report_path} ({info['wall_s']:.0f} s)")
        return 0
    except (BenchError, peers_mod.PeerError, fullsize_mod.FullsizeError) as e:
        print(f"benchmarks/run.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("benchmarks/run.py: interrupted", file=sys.stderr)
        return 130


def write_outputs(records: list[EditRecord], scenes: list[Scene], args: argparse.Namespace,
                  argv: list[str] | None, started: float, out: Path, report_path: Path) -> dict:
    info = machine_info()
    info["wall_s"] = time.time() - started
    info["quick"] = args.quick
    info["command"] = " ".join(["python benchmarks/run.py",
                                *(argv if argv is not None else sys.argv[1:])])
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    payload = {"machine": info, "records": [asdict(r) for r in records]}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    done = {r.scene for r in records}
    licences = {s.name: s.licence for s in scenes if s.name in done}
    previous = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
    report_path.write_text(report.keep_sections(previous, report.markdown(payload, licences)),
                           encoding="utf-8")
    return info


if __name__ == "__main__":
    sys.exit(main())
