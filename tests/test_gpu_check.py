"""benchmarks/gpu_check.sh and what it reports, checked on the CPU (its --cpu-smoke run):
everything in one archive with summary.json inside, the docs/bench_engine_gpu.json keys
null where nothing was measured, and per-term costs that are never negative."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from gpu_tolerance import judgement_differs

ROOT = Path(__file__).resolve().parents[1]

import gpu_summary
from bench_engine import cost_statistics


def test_a_term_cost_below_the_noise_is_zero_not_negative():
    fwd = 0.01
    noisy = cost_statistics([-0.002, 0.001, -0.0005], full=[0.050, 0.054, 0.048], fwd=fwd)
    assert noisy["sec"] == 0.0 and noisy["forwards"] == 0.0
    assert noisy["median_difference_sec"] == -0.0005  # what was measured stays in the report
    assert noisy["spread_sec"] == [-0.002, 0.001] and noisy["noise_sec"] == 0.003
    assert noisy["resolved"] is False and noisy["repeats"] == 3
    clear = cost_statistics([0.020, 0.022, 0.019], full=[0.050, 0.051, 0.049], fwd=fwd)
    assert clear["sec"] == 0.02 and clear["forwards"] == 2.0 and clear["resolved"] is True


def test_classifier_outputs_judge_alike_within_what_bf16_and_tf32_allow():
    """The GPU tests' tolerance (tests/gpu_tolerance.py), checked on made-up logits."""
    expected = 10 * torch.randn(2, 1000, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
    assert judgement_differs(expected + 0.01 * noise, expected) is None  # TF32-sized
    assert judgement_differs(expected + 0.1 * noise, expected) is None  # bf16-sized
    shuffled = expected[:, torch.randperm(1000, generator=torch.Generator().manual_seed(2))]
    assert "top-5 classes" in judgement_differs(shuffled, expected)
    promoted = expected.clone()
    promoted[1, 7] = expected[1].max() + 5  # a class that was not in the top 5 now leads
    assert judgement_differs(promoted, expected).startswith("image 1: top-5 classes")
    top = expected.topk(5, dim=1).indices
    blurred = 1.2 * expected + 3 * noise  # the same top 5, but logits far from the CPU's
    blurred.scatter_(1, top, expected.gather(1, top) + 100)
    assert "cosine similarity" in judgement_differs(blurred, expected)


def write(folder: Path, name: str, data: dict) -> None:
    (folder / name).write_text(json.dumps(data))


def test_the_summary_takes_the_figures_from_the_steps_and_names_what_is_missing(tmp_path):
    write(tmp_path, "env.json", {"device_name": "NVIDIA H200", "torch": "2.11"})
    write(tmp_path, "iteration.json", {"sec_per_iteration": 0.03,
                                       "iteration_cost_in_forwards": 4.5, "peak_gpu_mb": 900.0})
    write(tmp_path, "quality.json", {"completed": True, "time_to_result_s": 2.0,
                                     "peak_gpu_mb": 1200.0, "server": {
                                         "completed": True, "submit_to_result_s": 2.5,
                                         "submit_to_first_preview_s": 0.4,
                                         "second_job": {"submit_to_result_s": 2.2}}})
    write(tmp_path, "paper.json", {"completed": False, "stopped_after_s": 90,
                                   "time_to_result_s": None, "peak_gpu_mb": 3000.0,
                                   "capture": {"captured": False, "failure": "X: y"}})
    (tmp_path / "steps.tsv").write_text("env\t0\t3\npaper\t124\t100\n")
    summary = gpu_summary.summarise(tmp_path, 400, 390)
    assert {k: summary[k] for k in gpu_summary.HEADLINE} == {
        "device_name": "NVIDIA H200", "paper_seconds": None, "quality_seconds": 2.5,
        "first_preview_s": 0.4, "sec_per_iteration": 0.03, "iteration_cost_in_forwards": 4.5,
        "peak_gpu_mb": 3000.0}
    assert summary["unmeasured"] == ["paper_seconds"]
    assert summary["paper_setting"]["capture"] == {"captured": False, "failure": "X: y"}
    assert summary["quality_second_job_seconds"] == 2.2 and summary["draft_seconds"] is None
    assert summary["steps"]["paper"] == {"exit": 124, "seconds": 100}
    assert "error" in summary["gpu_tests"] or summary["gpu_tests"]["tests"] is None
    assert gpu_summary.main([str(tmp_path), "400", "390"]) == 1  # a step failed
    assert json.loads((tmp_path / "summary.json").read_text())["quality_seconds"] == 2.5


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_the_cpu_smoke_run_leaves_one_archive_with_the_summary(tmp_path):
    """The script's steps for real on the CPU (tiny settings; the server step runs a real
    magic-server process): one file comes back, and the summary in it has the figures."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_STEPS": "env iteration quality",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", str(out)],
                          check=False, capture_output=True, text=True, env=env, timeout=1800)
    assert [p.name for p in out.iterdir()] == ["gpu_check.tar.gz"], proc.stdout + proc.stderr
    with tarfile.open(out / "gpu_check.tar.gz") as archive:
        names = archive.getnames()
        summary = json.load(archive.extractfile("gpu_check/summary.json"))
        quality = json.load(archive.extractfile("gpu_check/quality.json"))
    assert {"gpu_check/env.json", "gpu_check/iteration.json", "gpu_check/steps.tsv",
            "gpu_check/iteration.log"} <= set(names)
    assert proc.returncode == 0, (summary["steps"], proc.stdout[-2000:])
    assert summary["device_name"] == "CPU"
    assert summary["sec_per_iteration"] > 0 and summary["iteration_cost_in_forwards"] > 0
    assert summary["quality_seconds"] > 0 and summary["first_preview_s"] is not None
    assert summary["paper_seconds"] is None and summary["peak_gpu_mb"] is None  # not run / CPU
    assert set(summary["unmeasured"]) == {"paper_seconds", "peak_gpu_mb"}
    costs = summary["term_costs"]["terms"]
    assert set(costs) == {"classifier"}  # the smoke run costs this one only
    assert all(c["sec"] >= 0 for c in costs.values())
    assert summary["cudnn_determinism"] == {"skipped": "cuDNN determinism matters on CUDA only"}
    server = quality["server"]
    assert server["path"] == "magic-server process"
    assert server["server_weights_label"] == "ResNet-50 from random-resnet50.safetensors"
    assert server["first_job"]["completed"] is True and "second_job" not in server
    # the product preset's own terms, as installed weights give them (the classifier's are
    # on exactly when LossWeights.product turns them on for a trained classifier)
    from magic_server.engine.loss_weights import LossWeights

    product = LossWeights.product(True)
    wanted = {k for k in ("classifier", "feature_stats") if getattr(product, k)} | {"patch"}
    assert set(quality["terms_seen"]) == wanted
    assert set(quality["setup"]["steps_s"]) >= {"reference", "levels", "start"}
    assert not list(tmp_path.glob("gpu_check.*")), "the work folder was left behind"
