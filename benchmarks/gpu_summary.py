"""summary.json of a benchmarks/gpu_check.sh run, from the JSON each step left in its folder.

    python benchmarks/gpu_summary.py FOLDER BUDGET_S TOOK_S

The figures docs/bench_engine_gpu.json takes (device_name, paper_seconds, quality_seconds,
first_preview_s, sec_per_iteration, iteration_cost_in_forwards, peak_gpu_mb) come first; each
is null when its step did not produce it (nothing is estimated), and `unmeasured` lists those.
Exit status 0 when every step that ran succeeded.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HEADLINE = ("device_name", "paper_seconds", "quality_seconds", "first_preview_s",
            "sec_per_iteration", "iteration_cost_in_forwards", "peak_gpu_mb")


def load(folder: Path, name: str) -> dict:
    try:
        data = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_steps(folder: Path) -> dict:
    steps = {}
    try:
        lines = (folder / "steps.tsv").read_text().splitlines()
    except OSError:
        return steps
    for line in lines:
        name, rc, secs = line.split("\t")
        steps[name] = {"exit": rc if rc == "skipped" else int(rc), "seconds": int(secs)}
    return steps


def read_tests(folder: Path) -> dict:
    try:
        root = ET.parse(folder / "gpu_tests.xml").getroot()
    except (OSError, ET.ParseError) as exc:
        return {"error": f"no JUnit results: {exc}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {"error": "no testsuite in the JUnit results"}
    cases = []
    for case in suite.iter("testcase"):
        entry = {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": "passed",
                 "seconds": float(case.get("time") or 0)}
        for kind, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(kind)
            if node is not None:
                entry.update(outcome=outcome, detail=(node.get("message") or "")[:300])
                break
        cases.append(entry)
    tests = {k: int(suite.get(k) or 0) for k in ("tests", "failures", "errors", "skipped")}
    tests["cases"] = cases
    return tests


def completed(report: dict, key: str = "time_to_result_s"):
    return report.get(key) if report.get("completed") else None


def summarise(folder: Path, budget: int, took: int) -> dict:
    env, it, quality, draft, memory, paper = (load(folder, n) for n in (
        "env.json", "iteration.json", "quality.json", "draft.json", "memory_24mp.json",
        "paper.json"))
    tests = read_tests(folder)
    (folder / "gpu_tests.json").write_text(json.dumps(tests, indent=2) + "\n")
    peaks = [r.get("peak_gpu_mb") for r in (it, quality, draft, memory, paper)
             if r.get("peak_gpu_mb") is not None]
    q_server, d_server = quality.get("server") or {}, draft.get("server") or {}
    summary = {
        "device_name": env.get("device_name"),
        "paper_seconds": completed(paper),
        "quality_seconds": q_server.get("submit_to_result_s") if q_server.get("completed")
        else None,
        "first_preview_s": q_server.get("submit_to_first_preview_s"),
        "sec_per_iteration": it.get("sec_per_iteration"),
        "iteration_cost_in_forwards": it.get("iteration_cost_in_forwards"),
        "peak_gpu_mb": max(peaks) if peaks else None,
    }
    summary["unmeasured"] = [k for k in HEADLINE if summary[k] is None]
    summary.update({
        "torch": env.get("torch"),
        "what": {
            "paper_seconds": "the paper's setting (18,000 iterations, 5 samples, 224 px), "
                             "engine in process, start to result, capture and compile included",
            "quality_seconds": "quality preset, bundled sample, 3 samples, classifier terms on "
                               "(random weights from a safetensors file), submit to result "
                               "through a magic-server process (its first job)",
            "first_preview_s": "the same job, submit to its first preview",
            "sec_per_iteration": "the paper objective, eager, every term on, 5 samples, 224 px",
            "peak_gpu_mb": "largest peak of the in-process runs",
        },
        "draft_seconds": d_server.get("submit_to_result_s") if d_server.get("completed")
        else None,
        "quality_second_job_seconds": (q_server.get("second_job") or {}).get(
            "submit_to_result_s"),
        "quality_engine_seconds": completed(quality),
        "first_preview_by_run": {
            "quality_server": q_server.get("submit_to_first_preview_s"),
            "draft_server": d_server.get("submit_to_first_preview_s"),
            "quality_engine": quality.get("first_preview_s"),
            "draft_engine": draft.get("first_preview_s"),
            "paper_engine": paper.get("first_preview_s"),
        },
        "setup_before_first_iteration": {name: r.get("setup") for name, r in (
            ("quality", quality), ("draft", draft), ("paper", paper)) if r.get("setup")},
        "paper_setting": {"iterations": paper.get("preset_iterations"),
                          "completed": paper.get("completed"),
                          "stopped_after_s": paper.get("stopped_after_s"),
                          "last_progress": paper.get("last_progress"),
                          "stages": paper.get("stages"), "capture": paper.get("capture")},
        "classifier_forward_sec": it.get("classifier_forward_sec"),
        "term_costs": it.get("term_costs"),
        "cudnn_determinism": it.get("cudnn_determinism"),
        "captured_iteration": it.get("compare_eager"),
        "peak_gpu_mb_24mp_1000px_edit": memory.get("peak_gpu_mb"),
        "memory_24mp_completed": memory.get("completed"),
        "server_errors": {k: r.get("error") for k, r in (("quality", q_server),
                                                         ("draft", d_server)) if r.get("error")},
        "gpu_tests": {k: tests.get(k) for k in ("tests", "failures", "errors", "skipped")},
        "steps": read_steps(folder),
        "budget_s": budget,
        "took_s": took,
    })
    return summary


def main(argv: list[str]) -> int:
    folder, budget, took = Path(argv[0]), int(argv[1]), int(argv[2])
    summary = summarise(folder, budget, took)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in (*HEADLINE, "unmeasured")}, indent=2))
    ok = all(s["exit"] == 0 for s in summary["steps"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
