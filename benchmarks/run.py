"""Measured speed and quality of MAGIC edits on the sample scenes.

    python benchmarks/run.py [--quick] [--device cpu|cuda|auto|all] [--weights PATH|untrained]
                             [--scenes a,b] [--modes move,remove] [--edits coffee:move,...]
                             [--presets tiny,draft]
                             [--report docs/benchmarks.md]

Runs scenes x edits x presets through the real engine on the CPU (and on the GPU when the machine
has one, with --device all or auto), measures speed (seconds per iteration, iteration cost in
classifier forwards at the same batch and size, time to first preview, time to result, peak RAM
and GPU memory) and quality (benchmarks/quality.py), then writes results.json, a Markdown report
and one picture grid per scene and device. --quick: tiny preset, low resolution, 2 scenes, CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
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

import quality
import report

SAMPLES = ROOT / "samples"
MODES = ("move", "copy", "reshape", "remove")
# --quick: two scenes, one edit each, the tiny preset cut to a few iterations at 64 px, CPU only.
QUICK = {"edits": "coffee:move,chelsea:remove", "presets": ["tiny"], "iterations": 12,
         "resolution": 64, "samples": 2, "devices": ["cpu"]}


class BenchError(Exception):
    """A user-facing problem (missing scene, bad device...): printed as one line."""


@dataclass
class Scene:
    name: str
    image: np.ndarray
    source_mask: np.ndarray
    guides: dict[str, np.ndarray]
    licence: str
    edits: dict[str, str]


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


def rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
             seed: int, iterations: int | None, log) -> tuple[EditRecord, list[np.ndarray]]:
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

    def on_progress(p) -> None:
        now = time.perf_counter()
        if p.stage == "synthesis":
            synth_times.append(now)
            if p.previews is not None and "first_preview" not in marks:
                marks["first_preview"] = now
        if now - last_print[0] > 5 or (p.stage == "synthesis" and p.iteration == p.total):
            last_print[0] = now
            log(f"    {p.stage} {p.iteration}/{p.total}  {now - marks['start']:.0f}s")

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    with peak_memory(engine.device) as mem:
        marks["start"] = time.perf_counter()
        result = engine.synthesize(scene.image, scene.source_mask, scene.guides[mode], opts,
                                   on_progress)
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
        device_name=desc.get("device_name", str(engine.device)), preset=preset,
        resolution=resolution, working_size=size, samples=samples,
        iterations=result.iterations, mask_net_steps=schedule.mask_net_steps,
        weights=engine.weights_label, weights_trained=bool(desc.get("weights_loaded")),
        seconds_per_iteration=spi, forward_seconds=fwd,
        iteration_cost_forwards=spi / fwd if fwd > 0 else float("nan"),
        first_preview_s=(marks["first_preview"] - marks["start"]
                         if "first_preview" in marks else None),
        result_s=marks["end"] - marks["start"],
        peak_rss_mb=mem.peak_rss_mb, peak_gpu_mb=mem.peak_gpu_mb,
        load_avg=(load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0))
    return rec, result.images


def measure_quality(scene: Scene, mode: str, images: list[np.ndarray],
                    segmenter: quality.ObjectSegmenter) -> dict:
    guide = scene.guides[mode]
    region = quality.edit_region(scene.source_mask, guide)
    # Preservation is judged outside the footprint the engine declares it may touch (edit
    # region, its rim and the feather band): there it promises the photo's pixels bit for bit.
    from magic_server.engine.synthesis import plan_edit

    footprint = plan_edit(scene.source_mask, guide).touched()
    per_sample = []
    for img in images:
        a = quality.guide_adherence(scene.image, scene.source_mask, guide, img, segmenter)
        p = quality.preservation(scene.image, img, footprint)
        r = quality.patch_realism(scene.image, img, region)
        per_sample.append({"adherence": asdict(a), "preservation": asdict(p),
                           "realism": asdict(r)})

    def mean(group: str, key: str) -> float:
        return float(np.mean([s[group][key] for s in per_sample]))

    return {
        "guide_iou": mean("adherence", "guide_iou"),
        "changed_agreement": mean("adherence", "changed_agreement"),
        "unknown_fraction": mean("adherence", "unknown_fraction"),
        "baseline_iou": per_sample[0]["adherence"]["baseline_iou"],
        "baseline_agreement": per_sample[0]["adherence"]["baseline_agreement"],
        "segmenter_ceiling_iou": per_sample[0]["adherence"]["segmenter_iou_on_source"],
        "psnr_outside": min(s["preservation"]["psnr_outside"] for s in per_sample),
        "max_abs_outside": max(s["preservation"]["max_abs_outside"] for s in per_sample),
        "coherence_ratio": mean("realism", "coherence_ratio"),
        "completeness_ratio": mean("realism", "completeness_ratio"),
        "diversity": quality.diversity(images, region),
        "per_sample": per_sample,
    }


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


def edit_plan(edits: str | None, scenes: str | None, modes: str | None) -> dict[str, list[str]]:
    """{scene: [edits]} from --edits pairs, or from --scenes x --modes (default: all x all)."""
    if edits:
        plan: dict[str, list[str]] = {}
        for pair in edits.split(","):
            scene, sep, mode = pair.strip().partition(":")
            if not sep or not scene or not mode:
                raise BenchError(f"--edits wants scene:edit pairs, got {pair!r}")
            plan.setdefault(scene, []).append(mode)
    else:
        index = json.loads((SAMPLES / "index.json").read_text(encoding="utf-8"))
        names = scenes.split(",") if scenes else list(index["scenes"])
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
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "benchmarks",
                    help="folder for results.json (default out/benchmarks)")
    ap.add_argument("--report", type=Path, default=None,
                    help="Markdown report path (default OUT/report.md); pictures go in a "
                         "folder named like the report without .md (docs/benchmarks.md -> "
                         "docs/benchmarks/)")
    return ap.parse_args(argv)


def load_engine(device_name: str, weights: str | None, log):
    from magic_server.checkpoints import WeightsError
    from magic_server.classifier import load_classifier
    from magic_server.devices import resolve_device
    from magic_server.engine.synthesis import Engine

    device = resolve_device(device_name)
    try:
        clf, label = load_classifier(weights, device, allow_download=False)
    except WeightsError as e:
        if weights is not None:
            raise BenchError(str(e)) from None
        log(f"no installed classifier weights ({e}); measuring with UNTRAINED weights")
        clf, label = load_classifier("untrained", device)
    return Engine(clf, device, label)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    report_path: Path = args.report or out / "report.md"

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        devices = QUICK["devices"] if args.quick else resolve_devices(args.device)
        plan = edit_plan(args.edits or (QUICK["edits"] if args.quick else None),
                         args.scenes, args.modes)
        scenes = load_scenes(list(plan))
        iterations = args.iterations or (QUICK["iterations"] if args.quick else None)
        out.mkdir(parents=True, exist_ok=True)
        pictures_dir = report_path.with_suffix("")
        pictures_dir.mkdir(parents=True, exist_ok=True)
        records: list[EditRecord] = []
        started = time.time()
        info: dict = {"wall_s": 0.0}
        for dev in devices:
            gpu = dev != "cpu"
            presets = (args.presets.split(",") if args.presets
                       else QUICK["presets"] if args.quick else ["draft" if gpu else "tiny"])
            resolution = args.resolution or (QUICK["resolution"] if args.quick
                                             else 224 if gpu else 96)
            samples = args.samples or (QUICK["samples"] if args.quick else 3 if gpu else 2)
            engine = load_engine(dev, args.weights, log)
            engine.warm_up()
            log(f"{dev}: {engine.describe().get('device_name')}, weights: {engine.weights_label}")
            for scene in scenes:
                segmenter = quality.ObjectSegmenter(scene.image, scene.source_mask)
                grid_rows = []
                for preset in presets:
                    for mode in plan[scene.name]:
                        log(f"  {scene.name} {mode} [{preset}, {resolution}px, {samples} "
                            f"samples]")
                        rec, images = run_edit(engine, scene, mode, preset, resolution,
                                               samples, args.seed, iterations, log)
                        rec.quality = measure_quality(scene, mode, images, segmenter)
                        log(f"    {rec.seconds_per_iteration:.3f} s/it "
                            f"({rec.iteration_cost_forwards:.1f} forwards), result "
                            f"{rec.result_s:.1f} s, guide IoU "
                            f"{rec.quality['guide_iou']:.2f} (unedited "
                            f"{rec.quality['baseline_iou']:.2f})")
                        records.append(rec)
                        grid_rows.append((f"{mode} ({preset})", scene.guides[mode], images,
                                          rec))
                        # picture and report after every edit: a cut-short run keeps its work
                        pic = pictures_dir / f"{scene.name}_{dev}.jpg"
                        report.picture_grid(scene.image, scene.source_mask, grid_rows).save(
                            pic, quality=85, optimize=True)
                        rec.picture = os.path.relpath(pic, report_path.parent)
                        info = write_outputs(records, scenes, args, argv, started, out,
                                             report_path)
        log(f"wrote {out / 'results.json'} and {report_path} ({info['wall_s']:.0f} s)")
        return 0
    except BenchError as e:
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
    report_path.write_text(report.markdown(payload, licences), encoding="utf-8")
    return info


if __name__ == "__main__":
    sys.exit(main())
