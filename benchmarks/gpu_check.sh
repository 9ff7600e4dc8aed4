#!/usr/bin/env bash
# One prepared GPU check, for a single `device` call on a lent GPU machine (issue 13):
# the GPU tests (pytest -m gpu) and the engine benchmarks, inside 8 minutes, every result as
# JSON in one folder.
#
#   benchmarks/gpu_check.sh [FOLDER]     (default: $OUT, else out/gpu_check)
#
# Writes: env.json (torch, CUDA, GPU), gpu_tests.json (+ gpu_tests.xml, pytest's JUnit file),
# iteration.json (paper objective: seconds per iteration, cost in classifier forwards, per-term
# costs), quality.json (quality preset on the bundled sample, engine and submit-to-result via a
# loopback server), memory_24mp.json (peak GPU memory, 24 MP photo, 1000 px edit),
# paper.json (the paper's setting: 18,000 iterations, 5 samples, 224 px, captured), capture.json
# (captured against eager seconds per iteration, --compare-eager), one .log per step,
# and summary.json with the figures docs/bench_engine_gpu.json needs (null when a step did not
# produce them: nothing is estimated). Each step has its own time limit; the paper run gets what
# is left and, if it cannot finish, says how far it got. Exit status 0 when every step
# succeeded, 1 otherwise (summary.json is written either way).
# Needs a Python with the project's dependencies, a CUDA build of torch, pytest and hypothesis.
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_BUDGET_S (default 470);
# GPU_CHECK_SMOKE=1 runs the same steps on the CPU with tiny settings (to check this script
# without a GPU; its figures mean nothing).

set -u
cd "$(dirname "$0")/.."
DIR="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$DIR"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
BUDGET_S="${GPU_CHECK_BUDGET_S:-470}"
START=$(date +%s)
STEPS="$DIR/steps.tsv"
: >"$STEPS"

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME LIMIT_S COMMAND...: run with a time limit, log to NAME.log, note status and time.
step() {
	local name=$1 limit=$2 t0 rc
	shift 2
	if [ "$limit" -lt 10 ]; then
		printf '%s\t%s\t%s\n' "$name" skipped 0 >>"$STEPS"
		echo "gpu_check: $name skipped (no time left)"
		return 0
	fi
	t0=$(date +%s)
	echo "gpu_check: $name (limit ${limit} s)"
	timeout --kill-after=10 "$limit" "$@" >"$DIR/$name.log" 2>&1
	rc=$?
	printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STEPS"
	echo "gpu_check: $name exit $rc after $(($(date +%s) - t0)) s"
}

step env 30 "$PY" -c '
import json, sys, torch
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda, "device_count": torch.cuda.device_count()}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(device_name=props.name, gpu_memory_mb=props.total_memory // 2**20,
                bf16=torch.cuda.is_bf16_supported())
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
' "$DIR/env.json"

step gpu_tests 120 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider \
	--junitxml="$DIR/gpu_tests.xml" tests/

if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
	BENCH=("$PY" benchmarks/bench_engine.py --device cpu)
	ITER=(--resolution 64 --batch 1 --iterations 2 --no-terms)
	CAPTURE=(--resolution 64 --batch 1 --iterations 2 --no-terms)
	QUALITY=(--batch 1 --resolution 64 --edit-iterations 6)
	MEMORY=(--batch 1 --resolution 64 --edit-iterations 2)
	PAPER=(--batch 1 --resolution 64 --edit-iterations 10)
else
	BENCH=("$PY" benchmarks/bench_engine.py --device cuda)
	ITER=(--resolution 224 --batch 5 --iterations 20)
	CAPTURE=(--resolution 224 --batch 5 --iterations 20 --no-terms)
	QUALITY=(--batch 3 --resolution 224)
	MEMORY=(--batch 3 --edit-iterations 30)
	PAPER=(--batch 5 --resolution 224)
fi
step iteration 45 "${BENCH[@]}" "${ITER[@]}" --capture eager --json "$DIR/iteration.json"
step quality 70 "${BENCH[@]}" --preset quality --scene sample "${QUALITY[@]}" \
	--skip-iterations --via-server --time-limit 30 --json "$DIR/quality.json"
step memory_24mp 55 "${BENCH[@]}" --preset quality --scene photo24mp "${MEMORY[@]}" \
	--skip-iterations --time-limit 35 --json "$DIR/memory_24mp.json"
# The paper's setting runs captured (auto: compiled on CUDA for long runs); what is left after
# it goes to timing the captured iteration against the eager one (--compare-eager).
CAPTURE_RESERVE=75
PAPER_LIMIT=$(($(left) - 15 - CAPTURE_RESERVE))
PAPER_TIME=$((PAPER_LIMIT - 25))
[ "$PAPER_TIME" -ge 5 ] || PAPER_TIME=5
step paper "$PAPER_LIMIT" "${BENCH[@]}" --preset paper "${PAPER[@]}" --skip-iterations \
	--time-limit "$PAPER_TIME" --json "$DIR/paper.json"
step capture $(($(left) - 10)) "${BENCH[@]}" "${CAPTURE[@]}" --skip-iterations --compare-eager \
	--json "$DIR/capture.json"

"$PY" - "$DIR" "$BUDGET_S" "$(($(date +%s) - START))" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

d, budget, took = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def load(name):
    try:
        return json.loads((d / name).read_text())
    except (OSError, ValueError):
        return {}

steps = {}
for line in (d / "steps.tsv").read_text().splitlines():
    name, rc, secs = line.split("\t")
    steps[name] = {"exit": rc if rc == "skipped" else int(rc), "seconds": int(secs)}
tests = {}
try:
    root = ET.parse(d / "gpu_tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                cases.append({"test": f"{case.get('classname')}::{case.get('name')}",
                              "outcome": outcome, "detail": (node.get("message") or "")[:300]})
                break
        else:
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}",
                          "outcome": outcome, "seconds": float(case.get("time") or 0)})
    tests = {k: int(suite.get(k) or 0) for k in ("tests", "failures", "errors", "skipped")}
    tests["cases"] = cases
except (OSError, ET.ParseError, AttributeError) as exc:
    tests = {"error": f"no JUnit results: {exc}"}
(d / "gpu_tests.json").write_text(json.dumps(tests, indent=2) + "\n")

env, it, q, mem, paper, cap = (load(n) for n in ("env.json", "iteration.json", "quality.json",
                                                 "memory_24mp.json", "paper.json",
                                                 "capture.json"))
peaks = [r.get("peak_gpu_mb") for r in (it, q, mem, paper) if r.get("peak_gpu_mb") is not None]
server = q.get("server") or {}
summary = {
    "device_name": env.get("device_name"),
    "torch": env.get("torch"),
    "paper_seconds": paper.get("time_to_result_s") if paper.get("completed") else None,
    "paper_setting": {"iterations": paper.get("preset_iterations"), "samples": paper.get("batch"),
                      "resolution": paper.get("resolution"), "completed": paper.get("completed"),
                      "stopped_after_s": paper.get("stopped_after_s"),
                      "last_progress": paper.get("last_progress"),
                      "stages": paper.get("stages")},
    "quality_seconds": server.get("submit_to_result_s"),
    "quality_engine_seconds": q.get("time_to_result_s") if q.get("completed") else None,
    "first_preview_s": server.get("submit_to_first_preview_s"),
    "first_preview_engine_s": q.get("first_preview_s"),
    "sec_per_iteration": it.get("sec_per_iteration"),
    "iteration_cost_in_forwards": it.get("iteration_cost_in_forwards"),
    "classifier_forward_sec": it.get("classifier_forward_sec"),
    "term_costs": it.get("term_costs"),
    "peak_gpu_mb": max(peaks) if peaks else None,
    "peak_gpu_mb_24mp_1000px_edit": mem.get("peak_gpu_mb"),
    "memory_24mp_completed": mem.get("completed"),
    "compare_eager": cap.get("compare_eager"),
    "paper_capture": paper.get("capture"),
    "gpu_tests": {k: tests.get(k) for k in ("tests", "failures", "errors", "skipped")},
    "steps": steps,
    "budget_s": budget,
    "took_s": took,
}
(d / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
ok = all(s["exit"] == 0 for s in steps.values())
sys.exit(0 if ok else 1)
EOF
