"""Engine speed benchmark (not a test): prints one JSON object.

    python benchmarks/bench_engine.py --device cpu --resolution 224 --batch 5 --iterations 5
    python benchmarks/bench_engine.py --device cuda --preset paper --batch 5 --json out/paper.json
    python benchmarks/bench_engine.py --device cuda --preset quality --scene sample --batch 3 \
        --via-server

Per-iteration timing runs the paper's objective with every term active (the patch critic joins
at iteration 0) and compares against a classifier forward at the same batch and resolution,
timed in the same run. Then each loss term's cost: the same iterations with that term's weight
set to 0, subtracted from the full iteration (terms are found from the engine: the names its
objective reports that are LossWeights fields; `--no-terms` skips this). Terms that share a
computation (the classifier and feature-statistics terms share one classifier forward) show
only their own extra cost.

`--capture eager|compile|auto` chooses how the classifier's judgement runs (engine/capture.py;
default: the engine's, `auto`). `--compare-eager` times the same iterations eager and captured
(torch.compile) in one run: seconds per iteration of each, the speed-up, and the wall time the
first captured run spent compiling.

`--preset` also times a whole edit with that preset: time to the first preview (previews every
PREVIEW_EVERY iterations, as the server asks for them), time to the result, seconds per
iteration of each stage; `--via-server` runs that edit through a loopback magic-server and
times it from submit to result. `--preset paper` runs the paper's setting (the whole image, no
refinement) unless `--composite` is given. Peak GPU memory (None on a CPU) is measured per part.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magic_server.engine.api import Cancelled, SynthesisOptions
from magic_server.engine.presets import Schedule
from magic_server.engine.resnet import untrained_resnet50
from magic_server.engine.synthesis import CRITIC_WARM_START_STEPS, Engine, LossWeights
from magic_server.jobs import PREVIEW_EVERY

NOT_TERMS = ("total", "wasserstein")  # reported with the losses, but not loss terms
# The engine sums its terms as weight * term, by name: a loss term is a LossWeights field.
WEIGHT_FIELDS = frozenset(f.name for f in dataclasses.fields(LossWeights))


def scene(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    src = (yy - size / 2) ** 2 + (xx - size * 0.3) ** 2 < (size * 0.2) ** 2
    guide = (yy - size / 2) ** 2 + (xx - size * 0.7) ** 2 < (size * 0.2) ** 2
    img[src] = (200, 40, 40)
    return img, src, guide, None


def sample_scene(mode: str = "move") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled default sample (samples/index.json) with its shipped composite, as
    `make sample` runs it."""
    from magic_server.imageio import load_image, load_mask
    from magic_server.sample import read_composite, read_scene

    sc = read_scene(ROOT / "samples", None, mode)
    image = load_image(sc.image)
    size = (image.shape[1], image.shape[0])
    source, guide = load_mask(sc.source_mask, size), load_mask(sc.guide_mask, size)
    return image, source, guide, read_composite(sc, image)


def photo_24mp() -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
    """A 6000x4000 photo-sized scene with a 1000 px edit (object and guide within a 1000 px
    box): what the GPU memory target is about."""
    h, w = 4000, 6000
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    yy, xx = np.ogrid[:h, :w]
    cy, cx, r = 2000, 3000, 250
    src = (yy - cy) ** 2 + (xx - (cx - 250)) ** 2 < r**2
    guide = (yy - cy) ** 2 + (xx - (cx + 250)) ** 2 < r**2
    img[src] = (200, 40, 40)
    return img, src, guide, None


def photo_12mp(composite: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A 4000x3000 photo (smooth colour field with a fine grain, like sky or bokeh) with a
    1000 px edit: a textured object of 500 px moved 500 px right (source and guide within a
    1000 x 500 box). Issue 17's cost figure: time and peak memory at draft on CPU. With
    `composite`, the object pasted at its new place is the start image (a moved GIMP layer)."""
    h, w = 3000, 4000
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([90 + 0.02 * xx, 120 + 0.015 * yy, 150 - 0.01 * xx], -1)
    field += 2 * rng.standard_normal((h, w, 3), dtype=np.float32)
    img = np.clip(field, 0, 255).astype(np.uint8)
    del field
    cy, cx, r = 1500, 1750, 250
    src = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    guide = (yy - cy) ** 2 + (xx - (cx + 500)) ** 2 < r**2
    obj = rng.integers(0, 3, (h // 10 + 1, w // 10 + 1)).repeat(10, 0).repeat(10, 1)[:h, :w]
    img[src] = np.array([[200, 40, 40], [230, 190, 60], [70, 50, 150]], np.uint8)[obj[src]]
    init = None
    if composite:
        init = img.copy()
        init[guide] = np.roll(img, 500, axis=1)[guide]
    return img, src, guide, init


def rss_mb() -> float:
    """The process's resident memory now (MB), from /proc; its peak so far elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Peak resident memory over a block, sampled every 20 ms (the whole process's: the
    photo and the engine's buffers; `before_mb` is what the process held when it started)."""

    def __enter__(self):
        import gc

        gc.collect()
        self.before_mb = self.peak_mb = rss_mb()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self.peak_mb = max(self.peak_mb, rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def time_classifier_forward(engine: Engine, batch: int, h: int, w: int, repeats: int) -> float:
    x = torch.rand(batch, 3, h, w, device=engine.device)
    times = []
    with torch.no_grad(), engine._autocast():
        for i in range(repeats + 2):
            sync(engine.device)
            t = time.perf_counter()
            engine.classifier(x)
            sync(engine.device)
            if i >= 2:
                times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_engine(args) -> Engine:
    device = torch.device(args.device)
    if args.weights == "untrained":
        return Engine(untrained_resnet50(), device, "untrained (random weights)",
                      capture_mode=args.capture)
    from magic_server.classifier import load_classifier

    model, label = load_classifier(args.weights, device, allow_download=False)
    return Engine(model, device, label, capture_mode=args.capture)


def compare_eager(engine: Engine, inputs, args) -> dict:
    """The paper's iterations eager, then captured, on the same engine and inputs."""
    saved = engine.capture_mode
    runs = {}
    try:
        for mode in ("eager", "compile"):
            engine.capture_mode = mode
            sync(engine.device)
            t0 = time.perf_counter()
            per_iter, _ = timed_iterations(engine, inputs, args)
            sync(engine.device)
            runs[mode] = {"sec_per_iteration": round(statistics.median(per_iter), 4),
                          "wall_s": round(time.perf_counter() - t0, 2)}
    finally:
        engine.capture_mode = saved
    state = engine.last_capture or {}
    captured = bool(state.get("captured"))
    eager, compiled = runs["eager"], runs["compile"]
    return {
        "eager": eager,
        "captured": compiled,
        "capture_worked": captured,
        "capture_failure": state.get("failure"),
        "speedup": round(eager["sec_per_iteration"] / compiled["sec_per_iteration"], 2)
        if captured and compiled["sec_per_iteration"] else None,
        "compile_overhead_s": round(compiled["wall_s"] - eager["wall_s"], 2),
        "backend": engine.capture_backend,
    }


# ---------------------------------------------------------------------------- iterations

WARM = 2  # iteration 0 carries the critic's warm start; iteration 1 settles allocations


def timed_iterations(engine: Engine, inputs, args, weights: LossWeights | None = None
                     ) -> tuple[list[float], set[str]]:
    """Seconds of each timed iteration of the paper's objective (one level at the working
    resolution, critic on from iteration 0), and the loss names the engine reported."""
    img, src, guide, _ = inputs
    opts = SynthesisOptions(samples=args.batch, resolution=args.resolution, seed=0,
                            preset="paper")
    stamps: list[float] = []
    names: set[str] = set()

    def on_progress(p) -> None:
        if p.stage == "synthesis":
            sync(engine.device)
            stamps.append(time.perf_counter())
            names.update(p.losses or {})

    schedule = Schedule(iterations=WARM + args.iterations, warmup=1, discriminator_start=0,
                        mask_net_steps=2)
    engine.synthesize(img, src, guide, opts, on_progress, schedule=schedule, weights=weights)
    per_iter = [b - a for a, b in zip(stamps[WARM - 1:], stamps[WARM:])]
    return per_iter, names


def term_costs(engine: Engine, inputs, args, fwd: float, reported: set[str]) -> dict:
    """Each loss term's cost: the iteration without it (weight 0) against a full one timed
    just before (so both see warm caches and the same machine load)."""
    base = LossWeights.for_mode("synthesize")
    names = sorted(n for n in reported if n in WEIGHT_FIELDS and getattr(base, n))
    full_sec = statistics.median(timed_iterations(engine, inputs, args, base)[0])
    out: dict = {"method": "full iteration minus the iteration with the term's weight at 0",
                 "full_sec_per_iteration": round(full_sec, 4), "terms": {}}
    for name in names:
        per_iter, _ = timed_iterations(engine, inputs, args, dataclasses.replace(base,
                                                                                 **{name: 0.0}))
        without = statistics.median(per_iter)
        out["terms"][name] = {"sec": round(full_sec - without, 4),
                              "forwards": round((full_sec - without) / fwd, 2)}
    unknown = sorted(n for n in reported if n not in WEIGHT_FIELDS and n not in NOT_TERMS)
    if unknown:
        out["reported_without_weight"] = unknown
    return out


# ---------------------------------------------------------------------------- whole edits

def preset_options(args) -> SynthesisOptions:
    composite = args.composite if args.composite is not None else args.preset != "paper"
    refine = not args.no_refine and args.preset != "paper"
    return SynthesisOptions(samples=args.batch, resolution=args.resolution, seed=0,
                            preset=args.preset, iterations=args.edit_iterations,
                            preview_every=PREVIEW_EVERY, composite=composite, refine=refine,
                            mode="move" if args.scene in MOVE_SCENES else "synthesize")


MOVE_SCENES = ("sample", "photo12mp", "photo12mp-composite")  # scenes whose edit is a move


def stage_speeds(stamps: list[tuple[str, float]]) -> dict[str, dict]:
    """Seconds per iteration of each stage (median of its steps after the first two)."""
    by_stage: dict[str, list[float]] = {}
    for (stage_a, a), (stage_b, b) in itertools.pairwise(stamps):
        if stage_a == stage_b:
            by_stage.setdefault(stage_b, []).append(b - a)
    out = {}
    for stage, steps in by_stage.items():
        steady = steps[2:] or steps
        out[stage] = {"steps": len(steps) + 1, "sec_per_iteration": round(
            statistics.median(steady), 4)}
    return out


def preset_edit(engine: Engine, inputs, args) -> dict:
    """One whole edit. With --time-limit it is cancelled when the limit is reached: the report
    then says how far it got (`completed` false) and has no time to result."""
    img, src, guide, init = inputs
    opts = preset_options(args)
    stamps: list[tuple[str, float]] = []
    first_preview: list[float] = []
    names: set[str] = set()
    progress: dict[str, int] = {}
    cancel = threading.Event()
    timer = threading.Timer(args.time_limit, cancel.set) if args.time_limit else None
    reset_peak(engine.device)
    rss = RssSampler()
    t0 = time.perf_counter()
    cpu0 = time.process_time()

    def on_progress(p) -> None:
        now = time.perf_counter()
        stamps.append((p.stage, now))
        names.update(p.losses or {})
        progress.update(iteration=p.iteration, total=p.total)
        if p.previews and not first_preview:
            first_preview.append(now - t0)

    if timer is not None:
        timer.start()
    try:
        with rss:
            result = engine.synthesize(img, src, guide, opts, on_progress, cancel,
                                       init_image=init)
    except Cancelled:
        result = None
    finally:
        if timer is not None:
            timer.cancel()
    sync(engine.device)
    took = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    out = {"preset": args.preset, "scene": args.scene, "composite": opts.composite,
           "refine": opts.refine, "completed": result is not None,
           "image_size": [int(img.shape[1]), int(img.shape[0])],
           "rss_before_edit_mb": round(rss.before_mb, 1),
           "edit_peak_rss_mb": round(rss.peak_mb, 1),
           # CPU seconds of the edit (all threads): a figure that depends less on what else
           # the machine runs than the wall time does
           "edit_cpu_s": round(cpu, 2),
           "load_avg_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
           else None}
    if result is None:
        return {**out, "stopped_after_s": round(took, 2), "time_limit_s": args.time_limit,
                "last_progress": progress, "stages": stage_speeds(stamps),
                "time_to_result_s": None,
                "first_preview_s": round(first_preview[0], 3) if first_preview else None,
                "peak_gpu_mb": peak_gpu_mb(engine.device), "capture": engine.last_capture}
    return {
        **out,
        "preset_iterations": result.iterations,
        "preset_edit_sec": round(took, 2),
        "time_to_result_s": round(took, 3),
        "time_to_first_preview_sec": round(first_preview[0], 2) if first_preview else None,
        "first_preview_s": round(first_preview[0], 3) if first_preview else None,
        "stages": stage_speeds(stamps),
        "terms_seen": sorted(n for n in names if n in WEIGHT_FIELDS),
        "peak_gpu_mb": peak_gpu_mb(engine.device),
        "capture": engine.last_capture,
    }


def server_edit(engine: Engine, inputs, args) -> dict:
    """The same edit submitted to a loopback magic-server: submit -> first preview -> result."""
    from magic_protocol.client import JobRequest, MagicClient, RawImage, Timeout
    from magic_server.server import Server

    img, src, guide, init = inputs
    h, w = img.shape[:2]
    rgba = np.dstack([img, np.full((h, w), 255, np.uint8)])
    opts = preset_options(args)
    request = JobRequest(RawImage(w, h, 4, rgba.tobytes()),
                         RawImage(w, h, 1, (src * 255).astype(np.uint8).tobytes()),
                         RawImage(w, h, 1, (guide * 255).astype(np.uint8).tobytes()),
                         mode=opts.mode, samples=opts.samples, preset=opts.preset,
                         iterations=opts.iterations, seed=0, resolution=opts.resolution,
                         preview=True, composite=opts.composite, refine=opts.refine)
    if init is not None:
        request.init_image = RawImage(w, h, 4, np.dstack(
            [init, np.full((h, w), 255, np.uint8)]).tobytes())
    server = Server(engine, "tcp://127.0.0.1:*")
    address = server.endpoint()
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    marks: dict[str, float] = {}
    reset_peak(engine.device)
    try:
        with MagicClient(address, timeout_s=30, heartbeat_s=1.0) as client:
            client.handshake()
            t0 = time.perf_counter()

            def on_event(event) -> None:
                if event.kind == "progress" and event.previews:
                    marks.setdefault("preview", time.perf_counter() - t0)

            try:
                client.submit(request, on_event=on_event, job_timeout_s=args.time_limit)
            except Timeout:
                return {"submit_to_result_s": None, "completed": False,
                        "stopped_after_s": round(time.perf_counter() - t0, 2),
                        "submit_to_first_preview_s": round(marks["preview"], 3)
                        if "preview" in marks else None,
                        "peak_gpu_mb": peak_gpu_mb(engine.device)}
            took = time.perf_counter() - t0
    finally:
        server.stop()
        loop.join(timeout=10)
    return {"submit_to_result_s": round(took, 3), "completed": True,
            "submit_to_first_preview_s": round(marks["preview"], 3) if "preview" in marks
            else None, "peak_gpu_mb": peak_gpu_mb(engine.device)}


# ---------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=5, help="samples")
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations")
    ap.add_argument("--preset", choices=("paper", "quality", "draft", "tiny"),
                    help="also time a whole edit with this preset")
    ap.add_argument("--edit-iterations", type=int, default=None,
                    help="override the preset's iteration count (proportions kept)")
    ap.add_argument("--scene", choices=("synthetic", "sample", "photo24mp", "photo12mp",
                                        "photo12mp-composite"),
                    default="synthetic",
                    help="synthetic disc scene (default), the bundled sample (move edit, from "
                         "its rough composite) or a 6000x4000 photo with a 1000 px edit")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="cancel the preset edit (and the --via-server one) after this long "
                         "and report how far it got")
    ap.add_argument("--composite", action=argparse.BooleanOptionalAction, default=None,
                    help="edit region only (default for every preset but paper)")
    ap.add_argument("--no-refine", action="store_true", help="no second, finer stage")
    ap.add_argument("--via-server", action="store_true",
                    help="also run the preset edit through a loopback magic-server")
    ap.add_argument("--no-terms", action="store_true", help="skip the per-term costs")
    ap.add_argument("--skip-iterations", action="store_true",
                    help="only the preset edit (no per-iteration timing)")
    ap.add_argument("--compare-eager", action="store_true",
                    help="captured (torch.compile) vs eager seconds per iteration")
    ap.add_argument("--capture", choices=("auto", "eager", "compile"), default=None,
                    help="how the classifier's judgement runs (default: auto = compiled on "
                         "CUDA for runs of 2000+ iterations)")
    ap.add_argument("--weights", default="untrained")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", "--out", dest="out", type=Path,
                    help="also write the JSON to this file")
    return ap


def save(report: dict, path: Path | None) -> str:
    """The report as JSON text, also written to `path` (after every part, so that a run
    stopped from outside still leaves what it measured)."""
    text = json.dumps(report, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"bench_engine: --device {args.device}: this PyTorch build sees no CUDA GPU")

    engine = load_engine(args)
    engine.warm_up()
    inputs = {"sample": sample_scene, "photo24mp": photo_24mp, "photo12mp": photo_12mp,
              "photo12mp-composite": lambda: photo_12mp(composite=True)}.get(
        args.scene, lambda: scene(args.resolution))()
    described = engine.describe()
    report: dict = {
        "device": described["device_name"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "resolution": args.resolution,
        "batch": args.batch,
    }
    fwd = time_classifier_forward(engine, args.batch, args.resolution, args.resolution,
                                  max(3, args.iterations))
    if not args.skip_iterations:
        reset_peak(engine.device)
        per_iter, reported = timed_iterations(engine, inputs, args)
        sec_per_iteration = statistics.median(per_iter)
        iteration_peak = peak_gpu_mb(engine.device)
        report.update({
            "timed_iterations": len(per_iter),
            "sec_per_iteration": round(sec_per_iteration, 4),
            "classifier_forward_sec": round(fwd, 4),
            "iteration_cost_in_forwards": round(sec_per_iteration / fwd, 2),
            "critic_warm_start_steps": CRITIC_WARM_START_STEPS,
            "bf16": engine.use_bf16,
        })
        save(report, args.out)
        if not args.no_terms:
            report["term_costs"] = term_costs(engine, inputs, args, fwd, reported)
            save(report, args.out)
    else:
        report.update({"classifier_forward_sec": round(fwd, 4), "bf16": engine.use_bf16})
        iteration_peak = None
    if args.compare_eager:
        report["compare_eager"] = compare_eager(engine, inputs, args)
        save(report, args.out)
    if args.preset:
        save(report, args.out)
        edit = preset_edit(engine, inputs, args)
        main_stage = edit["stages"].get("synthesis")
        if main_stage:
            edit["synthesis_cost_in_forwards"] = round(main_stage["sec_per_iteration"] / fwd, 2)
        report.update(edit)
        save(report, args.out)
        if args.via_server:
            report["server"] = server_edit(engine, inputs, args)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["device_name"] = described["device_name"]
    report["torch_device"] = str(engine.device)
    peaks = [p for p in (iteration_peak, report.get("peak_gpu_mb"),
                         (report.get("server") or {}).get("peak_gpu_mb")) if p is not None]
    report["peak_gpu_mb"] = max(peaks) if peaks else None
    if engine.device.type == "cuda":
        report["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        report["gpu_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(save(report, args.out))


if __name__ == "__main__":
    main()
