"""Engine speed benchmark (not a test): prints one JSON object.

    python benchmarks/bench_engine.py --device cpu --resolution 224 --batch 5 --iterations 5
    python benchmarks/bench_engine.py --device cuda --preset paper --batch 5 --json out/paper.json
    python benchmarks/bench_engine.py --device cuda --preset quality --scene sample --batch 3 \
        --via-server

Per-iteration timing runs the paper's objective with every term active (the patch critic joins
at iteration 0) and compares against a classifier forward at the same batch and resolution,
timed in the same run. Then each loss term's cost: the same iterations with that term's weight
set to 0, subtracted from the full iteration (terms are found from the engine: the names its
objective reports that are LossWeights fields; `--no-terms` skips this). Each difference is
taken `--term-repeats` times (full and without, one after the other); the report gives their
median (never below 0) with its spread and the noise of the full iteration, and says whether
the cost stands out of that noise. Terms that share a computation (the classifier and
feature-statistics terms share one classifier forward) show only their own extra cost.

`--weights random-file` writes a random-weights ResNet-50 as a safetensors file and loads it as
the installed weights are loaded: the classifier's terms are then on, as with the real weights
(`untrained`, the default here, turns the product presets' classifier terms off).

`--capture eager|graph|compile|auto` chooses how the iterations run (engine/capture.py;
default: the engine's, `auto`: whole iterations captured as CUDA graphs on CUDA).
`--compare-eager` times the same iterations eager, captured whole (`graph`) and with the
classifier's judgement compiled (`compile`) in one run: seconds per iteration of each, the
speed-ups, the wall time capture and compile cost, and which was fastest.

`--compare-determinism` times the same iterations with cuDNN's deterministic algorithms (the
engine's setting on CUDA) and with cuDNN free to pick: what same-seed-same-pixels costs.

`--preset` also times a whole edit with that preset: time to the first preview (previews every
PREVIEW_EVERY iterations, as the server asks for them), time to the result, seconds per
iteration of each stage; `--via-server` runs that edit through a loopback magic-server and
times it from submit to result. `--preset paper` runs the paper's setting (the whole image, no
refinement) unless `--composite` is given. Peak GPU memory (None on a CPU) is measured per part.
What runs before the first iteration is timed per step (`setup`: the classifier's reference
forward, the levels with their patch banks, the mask network's training, the start image).

`--via-server` runs the edit through a real `magic-server` process (started on the same device
and weights, on a loopback port; its start-up is not counted): submit to first preview and to
result, twice (`first_job`, then `second_job` on the warm server; `--server-jobs 1`: once).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from process_memory import rss_mb

from magic_server.engine.api import Cancelled, SynthesisOptions
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.optimise import CRITIC_WARM_START_STEPS
from magic_server.engine.presets import Schedule, resolve_preset
from magic_server.engine.synthesis import Engine
from magic_server.engines import build_engine
from magic_server.serve.jobs import PREVIEW_EVERY

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
    from magic_server.cli.sample import read_composite, read_scene
    from magic_server.imageio import load_image, load_mask

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


RANDOM_FILE = "random-file"


def random_weights_file(folder: Path) -> Path:
    """A random-weights ResNet-50 (the seeded untrained one) saved as safetensors: loading it
    is what loading installed weights is, and its terms count as a trained classifier's."""
    from safetensors.torch import save_file

    from magic_server.weights.classifier import untrained_resnet50 as seeded

    path = folder / "random-resnet50.safetensors"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in seeded().state_dict().items()}
        save_file(state, str(path))
    return path


def weights_argument(args) -> str:
    """--weights as magic-server takes it (random-file: the file, written once)."""
    if args.weights == RANDOM_FILE:
        return str(random_weights_file(Path(args.weights_dir)))
    return args.weights


def load_engine(args) -> Engine:
    return build_engine(weights_argument(args), torch.device(args.device),
                        capture_mode=args.capture)


def compare_eager(engine: Engine, inputs, args) -> dict:
    """The paper's iterations eager, then captured whole ("graph": the CUDA graph of
    engine/iteration_capture.py, auto's choice on CUDA), then with the judgement compiled
    ("compile"), on the same engine and inputs. Capture and compile costs are in wall_s."""
    saved = engine.capture_mode
    runs, states = {}, {}
    try:
        for mode in args.compare_modes.split(","):
            engine.capture_mode = mode
            sync(engine.device)
            t0 = time.perf_counter()
            per_iter, _ = timed_iterations(engine, inputs, args)
            sync(engine.device)
            runs[mode] = {"sec_per_iteration": round(statistics.median(per_iter), 4),
                          "wall_s": round(time.perf_counter() - t0, 2)}
            states[mode] = engine.last_capture or {}
    finally:
        engine.capture_mode = saved
    eager = runs["eager"]

    def versus(mode: str) -> dict | None:
        if mode not in runs:
            return None
        worked = bool(states[mode].get("captured"))
        run = runs[mode]
        return {**run, "worked": worked, "failure": states[mode].get("failure"),
                "speedup": round(eager["sec_per_iteration"] / run["sec_per_iteration"], 2)
                if worked and run["sec_per_iteration"] else None,
                "overhead_s": round(run["wall_s"] - eager["wall_s"], 2)}

    graph, compiled = versus("graph"), versus("compile")
    return {
        "eager": eager,
        "captured": graph,  # the whole iteration as a graph (auto's choice on CUDA)
        "compiled": {**compiled, "backend": engine.capture_backend} if compiled else None,
        "capture_worked": graph["worked"] if graph else None,
        "capture_failure": graph["failure"] if graph else None,
        "speedup": graph["speedup"] if graph else None,
        "compile_overhead_s": compiled["overhead_s"] if compiled else None,
        "faster": min(runs, key=lambda m: runs[m]["sec_per_iteration"]
                      if m == "eager" or states[m].get("captured") else float("inf")),
    }


def compare_determinism(engine: Engine, inputs, args) -> dict:
    """What same-seed-same-pixels costs on CUDA: the paper's iterations with cuDNN's
    deterministic algorithms (the engine's setting) against cuDNN free to pick (benchmark
    mode), in one process, each run once to warm up and once timed. The engine should make
    determinism an option when it costs more than 10 %."""
    if engine.device.type != "cuda":
        return {"skipped": "cuDNN determinism matters on CUDA only"}
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark)
    runs = {}
    try:
        for name, flags in (("deterministic", (True, False)), ("free", (False, True))):
            cudnn.deterministic, cudnn.benchmark = flags
            timed_iterations(engine, inputs, args)  # warm-up (benchmark mode picks here)
            runs[name] = statistics.median(timed_iterations(engine, inputs, args)[0])
    finally:
        cudnn.deterministic, cudnn.benchmark = saved
    cost = runs["deterministic"] / runs["free"] - 1 if runs["free"] else None
    return {"deterministic_sec_per_iteration": round(runs["deterministic"], 5),
            "free_sec_per_iteration": round(runs["free"], 5),
            "cost_fraction": round(cost, 3) if cost is not None else None,
            "over_10_percent": cost is not None and cost > 0.10}


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


def cost_statistics(differences: list[float], full: list[float], fwd: float) -> dict:
    """One term's cost from `differences` (full minus without, one per repeat) and the full
    iteration's own repeats (`full`): the median difference, never below 0 (a negative median
    is noise: the term costs less than can be told apart), its spread, and the noise (the
    spread of the full iteration across repeats). `resolved`: the median stands out of the
    noise."""
    median = statistics.median(differences)
    noise = (max(full) - min(full)) / 2 if len(full) > 1 else None
    cost = max(0.0, median)
    return {"sec": round(cost, 5), "forwards": round(cost / fwd, 2) if fwd else None,
            "median_difference_sec": round(median, 5),
            "spread_sec": [round(min(differences), 5), round(max(differences), 5)],
            "noise_sec": round(noise, 5) if noise is not None else None,
            "resolved": noise is not None and median > noise, "repeats": len(differences)}


def term_costs(engine: Engine, inputs, args, fwd: float, reported: set[str]) -> dict:
    """Each loss term's cost: the iteration without it (weight 0) against a full one timed
    just before (so both see warm caches and the same machine load), `--term-repeats` times."""
    base = LossWeights.for_mode("synthesize")  # the paper's weights: every term on
    names = sorted(n for n in reported if n in WEIGHT_FIELDS and getattr(base, n)
                   and (not args.terms or n in args.terms.split(",")))
    repeats = max(1, args.term_repeats)
    full_runs: list[float] = []
    differences: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            full = statistics.median(timed_iterations(engine, inputs, args, base)[0])
            without = statistics.median(timed_iterations(
                engine, inputs, args, dataclasses.replace(base, **{name: 0.0}))[0])
            full_runs.append(full)
            differences[name].append(full - without)
    full_sec = statistics.median(full_runs) if full_runs else None
    out: dict = {"method": "full iteration minus the iteration with the term's weight at 0; "
                           "median over repeats, never below 0",
                 "repeats": repeats, "timed_iterations_each": args.iterations,
                 "full_sec_per_iteration": round(full_sec, 4) if full_sec else None,
                 "terms": {n: cost_statistics(differences[n], full_runs, fwd) for n in names}}
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


def edit_schedule(opts: SynthesisOptions, args, init) -> Schedule | None:
    """The preset's schedule, with --mask-net-steps when given (smoke runs only)."""
    if args.mask_net_steps is None:
        return None
    schedule = resolve_preset(opts.preset).schedule(opts.iterations,
                                                    from_composite=init is not None)
    return dataclasses.replace(schedule, mask_net_steps=args.mask_net_steps)


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


SETUP_STEPS = {  # the engine's method (on the engine, or its LevelBuilder) -> what it does
    "levels.reference": "reference",  # the photo at the working resolution, a classifier forward
    "_product_levels": "levels",  # each level's photo, masks and patch bank (product presets)
    "_paper_levels": "levels",
    "_fit_mask_net": "mask_net",  # the mask network's training
    "levels.start": "start",  # the start image x'
}


@contextlib.contextmanager
def setup_timer(engine: Engine):
    """Times the engine's set-up steps (outermost calls only: the levels' own references count
    as the levels'), synchronised on a GPU. Yields {step: seconds}."""
    times: dict[str, float] = {}
    depth = [0]
    patched = {}  # step name -> the object whose method is wrapped

    def timed(name: str, method):
        @functools.wraps(method)
        def wrapper(*a, **k):
            depth[0] += 1
            sync(engine.device)
            t = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                sync(engine.device)
                depth[0] -= 1
                if depth[0] == 0:
                    step = SETUP_STEPS[name]
                    times[step] = times.get(step, 0.0) + time.perf_counter() - t
        return wrapper

    for name in SETUP_STEPS:
        *path, attr = name.split(".")
        owner = functools.reduce(getattr, path, engine)
        method = getattr(owner, attr, None)
        if method is not None:
            patched[name] = owner
            setattr(owner, attr, timed(name, method))
    try:
        yield times
    finally:
        for name, owner in patched.items():
            delattr(owner, name.split(".")[-1])  # the class's method again


def preset_edit(engine: Engine, inputs, args) -> dict:
    """One whole edit. With --time-limit it is cancelled when the limit is reached: the report
    then says how far it got (`completed` false) and has no time to result."""
    img, src, guide, init = inputs
    opts = preset_options(args)
    stamps: list[tuple[str, float]] = []
    first_preview: list[float] = []
    first_iteration: list[float] = []  # the first iteration of x' done (not the mask network)
    iteration_preview: list[float] = []  # the first preview of x' after an iteration
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
        if p.stage != "mask-net" and p.iteration >= 1:
            if not first_iteration:
                first_iteration.append(now - t0)
            if p.previews and not iteration_preview:
                iteration_preview.append(now - t0)

    if timer is not None:
        timer.start()
    with setup_timer(engine) as setup:
        try:
            with rss:
                result = engine.synthesize(img, src, guide, opts, on_progress, cancel,
                                           init_image=init,
                                           schedule=edit_schedule(opts, args, init))
        except Cancelled:
            result = None
        finally:
            if timer is not None:
                timer.cancel()
    sync(engine.device)
    took = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    before = round(first_iteration[0], 3) if first_iteration else None
    timed_steps = {k: round(v, 3) for k, v in setup.items()}
    out = {"preset": args.preset, "scene": args.scene, "composite": opts.composite,
           "refine": opts.refine, "completed": result is not None,
           "image_size": [int(img.shape[1]), int(img.shape[0])],
           "rss_before_edit_mb": round(rss.before_mb, 1),
           "edit_peak_rss_mb": round(rss.peak_mb, 1),
           # CPU seconds of the edit (all threads): a figure that depends less on what else
           # the machine runs than the wall time does
           "edit_cpu_s": round(cpu, 2),
           "load_avg_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
           else None,
           "setup": {"steps_s": timed_steps, "first_iteration_done_s": before,
                     "first_iteration_and_rest_s": round(before - sum(setup.values()), 3)
                     if before else None,
                     "first_iteration_preview_s": round(iteration_preview[0], 3)
                     if iteration_preview else None}}
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


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_START_LIMIT_S = 300  # loading the weights, a warm-up: a cold GPU start takes a while


@contextlib.contextmanager
def server_process(args):
    """A real `magic-server` process on the benchmark's device and weights, on a free loopback
    port; yields (address, its log lines). Ended (terminate, then kill) on the way out."""
    address = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "magic_server.server", "--bind", address, "--device",
           str(args.device), "--weights", weights_argument(args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    if args.capture:
        env["MAGIC_CAPTURE"] = args.capture
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "magic-server ready on" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        t0 = time.perf_counter()
        while not ready.wait(0.2):
            if proc.poll() is not None or time.perf_counter() - t0 > SERVER_START_LIMIT_S:
                raise RuntimeError("magic-server did not start: " + " | ".join(lines[-5:]))
        lines.append(f"(bench: ready after {time.perf_counter() - t0:.1f} s)")
        yield address, lines
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        reader.join(timeout=5)


def server_edit(engine: Engine, inputs, args) -> dict:
    """The same edit submitted to a real magic-server process: submit -> first preview ->
    result, on the first job after the server is ready and again on a second one."""
    from magic_protocol.client import JobFailed, JobRequest, MagicClient, RawImage, Timeout

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
    out: dict = {"path": "magic-server process", "weights": weights_argument(args)}
    try:
        with server_process(args) as (address, lines), \
                MagicClient(address, timeout_s=30, heartbeat_s=1.0) as client:
            info = client.handshake()
            out["server_weights_label"] = info.raw.get("weights_label")
            for key in ("first_job", "second_job")[:max(1, args.server_jobs)]:
                marks: dict[str, float] = {}
                t0 = time.perf_counter()

                def on_event(event, marks=marks, t0=t0) -> None:
                    if event.kind == "progress" and event.previews:
                        marks.setdefault("preview", time.perf_counter() - t0)

                run: dict = {}
                try:
                    result = client.submit(request, on_event=on_event,
                                           job_timeout_s=args.time_limit)
                    run.update(completed=True, submit_to_result_s=round(
                        time.perf_counter() - t0, 3), iterations=result.iterations)
                except Timeout:
                    run.update(completed=False, submit_to_result_s=None,
                               stopped_after_s=round(time.perf_counter() - t0, 2))
                except JobFailed as exc:
                    run.update(completed=False, submit_to_result_s=None,
                               error=f"{exc.code}: {exc.message}")
                run["submit_to_first_preview_s"] = (round(marks["preview"], 3)
                                                    if "preview" in marks else None)
                out[key] = run
                if not run["completed"]:
                    break
            out["server_log_tail"] = lines[-8:]
    except (RuntimeError, OSError) as exc:
        out["error"] = str(exc)
    first = out.get("first_job") or {}
    # the figures users see first: the first job on a ready server
    out.update(submit_to_result_s=first.get("submit_to_result_s"),
               submit_to_first_preview_s=first.get("submit_to_first_preview_s"),
               completed=bool(first.get("completed")))
    return out


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
    ap.add_argument("--server-jobs", type=int, default=2, choices=(1, 2),
                    help="--via-server: time the first job only, or a second one too")
    ap.add_argument("--no-terms", action="store_true", help="skip the per-term costs")
    ap.add_argument("--skip-iterations", action="store_true",
                    help="only the preset edit (no per-iteration timing)")
    ap.add_argument("--compare-eager", action="store_true",
                    help="seconds per iteration eager, captured whole (graph) and with the "
                         "judgement compiled (compile)")
    ap.add_argument("--compare-modes", default="eager,graph,compile",
                    help="--compare-eager: the capture modes timed, eager first (compile "
                         "costs a minute of compiling on a GPU)")
    ap.add_argument("--compare-determinism", action="store_true",
                    help="CUDA: seconds per iteration with cuDNN deterministic (the engine's "
                         "setting) against cuDNN free to pick")
    ap.add_argument("--capture", choices=("auto", "eager", "graph", "compile"), default=None,
                    help="how the iterations run (default: auto = each level of 40+ "
                         "iterations captured whole as a CUDA graph on CUDA, eager elsewhere)")
    ap.add_argument("--weights", default="untrained",
                    help="untrained (default: seeded random weights, classifier terms off in "
                         "the product presets), random-file (random weights written as a "
                         "safetensors file and loaded as installed ones are: terms on) or a "
                         "weights file")
    ap.add_argument("--weights-dir", default=str(Path(tempfile.gettempdir()) / "magic-bench"),
                    help="where --weights random-file writes its file")
    ap.add_argument("--mask-net-steps", type=int, default=None,
                    help="override the preset's mask network steps (in-process edit only; "
                         "smoke runs)")
    ap.add_argument("--terms", default=None, metavar="NAME,...",
                    help="cost only these terms (default: every term the objective reports)")
    ap.add_argument("--term-repeats", type=int, default=3,
                    help="repeats of each per-term difference (median and spread reported)")
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
        "device": described.device_name,
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
    if args.compare_determinism:
        report["cudnn_determinism"] = compare_determinism(engine, inputs, args)
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
    report["device_name"] = described.device_name
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
