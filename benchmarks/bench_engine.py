"""Engine speed benchmark (not a test): prints one JSON object.

    python benchmarks/bench_engine.py --device cpu --resolution 224 --batch 5 --iterations 5
    python benchmarks/bench_engine.py --device cuda --preset paper --batch 5

Per-iteration timing runs with every term active (the patch critic joins at iteration 0) and
compares against a classifier forward at the same batch and resolution, timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magic_server.engine.api import SynthesisOptions
from magic_server.engine.presets import Schedule
from magic_server.engine.resnet import untrained_resnet50
from magic_server.engine.synthesis import CRITIC_WARM_START_STEPS, Engine


def scene(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    src = (yy - size / 2) ** 2 + (xx - size * 0.3) ** 2 < (size * 0.2) ** 2
    guide = (yy - size / 2) ** 2 + (xx - size * 0.7) ** 2 < (size * 0.2) ** 2
    img[src] = (200, 40, 40)
    return img, src, guide


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        return Engine(untrained_resnet50(), device, "untrained (random weights)")
    from magic_server.classifier import load_classifier

    model, label = load_classifier(args.weights, device, allow_download=False)
    return Engine(model, device, label)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations")
    ap.add_argument("--preset", help="also time a whole edit with this preset")
    ap.add_argument("--weights", default="untrained")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    engine = load_engine(args)
    engine.warm_up()
    img, src, guide = scene(args.resolution)
    opts = SynthesisOptions(samples=args.batch, resolution=args.resolution, seed=0)

    stamps: list[float] = []

    def on_progress(p) -> None:
        if p.stage == "synthesis":
            sync(engine.device)
            stamps.append(time.perf_counter())

    warm = 2  # iteration 0 carries the critic's warm start; iteration 1 settles allocations
    schedule = Schedule(iterations=warm + args.iterations, warmup=1, discriminator_start=0,
                        mask_net_steps=2)
    engine.synthesize(img, src, guide, opts, on_progress, schedule=schedule)
    per_iter = [b - a for a, b in zip(stamps[warm - 1:], stamps[warm:])]
    sec_per_iteration = statistics.median(per_iter)
    fwd = time_classifier_forward(engine, args.batch, args.resolution, args.resolution,
                                  max(3, args.iterations))
    report: dict = {
        "device": engine.describe()["device_name"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "resolution": args.resolution,
        "batch": args.batch,
        "timed_iterations": len(per_iter),
        "sec_per_iteration": round(sec_per_iteration, 4),
        "classifier_forward_sec": round(fwd, 4),
        "iteration_cost_in_forwards": round(sec_per_iteration / fwd, 2),
        "critic_warm_start_steps": CRITIC_WARM_START_STEPS,
        "bf16": engine.use_bf16,
    }
    if args.preset:
        first_preview: list[float] = []
        t0 = time.perf_counter()

        def on_edit_progress(p) -> None:
            if p.previews and not first_preview:
                first_preview.append(time.perf_counter() - t0)

        popts = SynthesisOptions(samples=args.batch, resolution=args.resolution, seed=0,
                                 preset=args.preset, preview_every=50)
        result = engine.synthesize(img, src, guide, popts, on_edit_progress)
        sync(engine.device)
        report["preset"] = args.preset
        report["preset_iterations"] = result.iterations
        report["preset_edit_sec"] = round(time.perf_counter() - t0, 2)
        report["time_to_first_preview_sec"] = round(first_preview[0], 2) if first_preview else None
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if engine.device.type == "cuda":
        report["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        report["gpu_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
