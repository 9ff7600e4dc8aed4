"""The classifier and feature-statistics terms measured with a real network (issue 19).

    python benchmarks/classifier_terms.py [--weights efficientnet-lite0] [--edits coffee:move,...]
        [--preset draft] [--resolution 160] [--samples 1] [--seed 0] [--iterations N]
        [--configs off,on,smoothed] [--class-share 0.1] [--feature-share 0.1] [--copies 4]
        [--paper-iterations 60] [--out docs/classifier-terms]

Runs each edit with the same preset, seeds and start under each configuration of the judged
terms (product presets: shares of the patch term's gradient norm, engine/term_balance.py):
  off       both terms off (the product default with random weights)
  on        class share and feature share as given
  smoothed  the same shares, the classifier's input gradient averaged over --copies noisy,
            shifted copies of x'
  class     only the class term;  features: only the feature-statistics term
and reports every quality figure benchmarks/run.py reports, and the cost (seconds per iteration
and to the result). With --paper-iterations N it also runs the `paper` preset (N iterations) on
each scene and records the photo's predicted class, its probability, and x''s cross-entropy to
that class at the start and at the end. Writes results.json and one picture per edit under
--out (the edit's region at 100 %, one column per configuration in --configs order, one row per
sample), and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality
import run as bench

FULLRES = ("seam", "edges", "changed_outside", "object_structure", "halo")  # --fullsize
FIGURES = ("guide_iou", "changed_agreement", "psnr_outside", "coherence_ratio",
           "completeness_ratio", "noise_figure", "diversity", "object_left")


class WeightedEngine:
    """The engine with every edit run under `weights` (benchmarks/run.py's run_edit unchanged)."""

    def __init__(self, engine, weights) -> None:
        self._engine, self._weights = engine, weights

    def synthesize(self, *args, **kw):
        return self._engine.synthesize(*args, weights=self._weights, **kw)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def crop(scene, mode: str, image: np.ndarray) -> np.ndarray:
    """The edit's region at 100 % (what the engine synthesized)."""
    from magic_server.engine.edit_plan import plan_edit

    box = plan_edit(scene.source_mask, scene.guides[mode]).box
    return image[box.top:box.bottom, box.left:box.right]


def config_weights(name: str, args):
    from magic_server.engine.loss_weights import LossWeights

    base = replace(LossWeights.product(True), smoothing=0)
    shares = {"off": (0.0, 0.0), "on": (args.class_share, args.feature_share),
              "smoothed": (args.class_share, args.feature_share),
              "class": (args.class_share, 0.0), "features": (0.0, args.feature_share)}
    if name not in shares:
        raise SystemExit(f"unknown configuration {name!r}; choose from {', '.join(shares)}")
    c, f = shares[name]
    return replace(base, classifier=c, feature_stats=f,
                   smoothing=args.copies if name == "smoothed" else 0)


def paper_run(engine, scene, mode: str, args, log) -> dict:
    """The paper's objective for a few iterations: x''s cross-entropy to the photo's class."""
    import torch

    from magic_server.engine.api import SynthesisOptions

    seen: list[float] = []

    def on_progress(p) -> None:
        if p.stage == "synthesis" and "classifier" in p.losses:
            seen.append(p.losses["classifier"])

    opts = SynthesisOptions(samples=args.samples, preset="paper", iterations=args.paper_iterations,
                            seed=args.seed, mode=mode, resolution=args.resolution)
    t0 = time.perf_counter()
    result = engine.synthesize(scene.image, scene.source_mask, scene.guides[mode], opts,
                               on_progress)
    from magic_server.engine.tensors import image_to_tensor, working_size

    top, left, bottom, right = result.region
    crop = scene.image[top:bottom, left:right]
    size = working_size(bottom - top, right - left, args.resolution)
    with torch.no_grad():
        probs = engine.classifier(image_to_tensor(crop, size, engine.device)).softmax(1)[0]
        outs = torch.stack([image_to_tensor(im[top:bottom, left:right], size, engine.device)[0]
                            for im in result.images])
        probs_out = engine.classifier(outs).softmax(1)[:, result.predicted_class]
    record = {"scene": scene.name, "mode": mode, "iterations": result.iterations,
              "class": result.predicted_class, "photo_probability": float(
                  probs[result.predicted_class]),
              "ce_first_report": seen[0] if seen else None, "ce_last": result.losses.get(
                  "classifier"), "result_probability": float(probs_out.mean()),
              "seconds": time.perf_counter() - t0}
    log(f"  paper {scene.name} {mode}: class {record['class']} (p={record['photo_probability']:.3f})"
        f", CE {record['ce_first_report']} -> {record['ce_last']}, result p="
        f"{record['result_probability']:.3f}")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="efficientnet-lite0")
    ap.add_argument("--edits", default="coffee:move,chelsea:remove")
    ap.add_argument("--preset", default="draft")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--start", default="noise", choices=list(bench.STARTS))
    ap.add_argument("--configs", default="off,on,smoothed")
    ap.add_argument("--class-share", type=float, default=0.1)
    ap.add_argument("--feature-share", type=float, default=0.1)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--paper-iterations", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "classifier-terms")
    ap.add_argument("--fullsize", action="store_true",
                    help="the full-size scenes (benchmarks/run.py --fullsize), e.g. --edits "
                         "garden:move,raindrops:remove")
    bench.add_fullsize_sources(ap)
    args = ap.parse_args(argv)

    from magic_server.engines import build_engine

    def log(msg: str) -> None:
        print(msg, flush=True)

    engine = build_engine(args.weights, "cpu", allow_download=True)
    engine.warm_up()
    plan = bench.edit_plan(args.edits, None, None)
    scenes = (bench.load_fullsize(plan, args, log) if args.fullsize
              else bench.load_scenes(list(plan)))
    args.out.mkdir(parents=True, exist_ok=True)
    records, papers = [], []
    configs = args.configs.split(",")
    for scene in scenes:
        segmenter = quality.ObjectSegmenter(scene.image, scene.source_mask)
        for mode in plan[scene.name]:
            init = bench.start_image(scene, mode, args.start)
            rows = []
            for name in configs:
                log(f"{scene.name} {mode} [{args.preset}, {args.resolution}px, {name}]")
                rec, images = bench.run_edit(
                    WeightedEngine(engine, config_weights(name, args)), scene, mode,
                    args.preset, args.resolution, args.samples, args.seed, args.iterations,
                    lambda m: None, init_image=init, start=args.start)
                q = bench.measure_quality(scene, mode, images, segmenter, init_image=init)
                q.pop("per_sample", None)
                records.append({"scene": scene.name, "mode": mode, "config": name,
                                "seconds_per_iteration": rec.seconds_per_iteration,
                                "result_s": rec.result_s, "iterations": rec.iterations,
                                "iteration_cost_forwards": rec.iteration_cost_forwards,
                                "load_avg": rec.load_avg,
                                "quality": q})
                log("  " + ", ".join(f"{k} {q[k]:.3f}" for k in FIGURES if q.get(k) is not None)
                    + f", {rec.seconds_per_iteration:.3f} s/it, {rec.result_s:.1f} s")
                rows.append(np.concatenate([crop(scene, mode, im) for im in images], axis=0))
            gap = np.full((rows[0].shape[0], 4, 3), 255, np.uint8)
            picture = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=1)
            Image.fromarray(picture).save(args.out / f"{scene.name}_{mode}.jpg", quality=92)
            if args.paper_iterations:
                papers.append(paper_run(engine, scene, mode, args, log))
    payload = {"command": " ".join(["python benchmarks/classifier_terms.py",
                                    *(argv if argv is not None else sys.argv[1:])]),
               "weights": engine.weights_label, "args": {k: str(v) for k, v in vars(args).items()},
               "records": records, "paper": papers,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    log(markdown(records, papers))
    return 0


def markdown(records: list[dict], papers: list[dict]) -> str:
    full = any((r["quality"].get("fullres") or {}) for r in records)
    head = ["edit", "terms", *FIGURES, *(FULLRES if full else ()), "s/it", "result s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        q = r["quality"]
        cells = [f"{r['scene']} {r['mode']}", r["config"]]
        cells += ["" if q.get(k) is None else f"{q[k]:.3f}" for k in FIGURES]
        if full:
            f = q.get("fullres") or {}
            cells += ["" if not isinstance(f.get(k), float) else f"{f[k]:.3f}"
                      for k in FULLRES]
        cells += [f"{r['seconds_per_iteration']:.3f}", f"{r['result_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if papers:
        lines += ["", "| scene | class | photo p | CE first report | CE last | result p |",
                  "|---|---|---|---|---|---|"]
        for p in papers:
            lines.append(f"| {p['scene']} {p['mode']} | {p['class']} | "
                         f"{p['photo_probability']:.3f} | {p['ce_first_report']:.3f} | "
                         f"{p['ce_last']:.3f} | {p['result_probability']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
