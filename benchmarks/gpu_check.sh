#!/usr/bin/env bash
# One prepared GPU check, for a single `device` call on a lent GPU machine (issues 13, 18):
# the GPU tests (pytest -m gpu) and the engine benchmarks, inside 7 minutes, everything left in
# ONE archive, FOLDER/gpu_check.tar.gz (a device call returns at most 8 files), with
# summary.json inside.
#
#   benchmarks/gpu_check.sh [--cpu-smoke] [FOLDER]     (FOLDER default: $OUT, else out/gpu_check)
#   benchmarks/gpu_check.sh --fetch-wheels             (here, with a package registry: the
#                                                       wheels the GPU machine lacks, into .whl)
#
# Inside the archive: env.json (torch, CUDA, GPU), gpu_tests.json (+ gpu_tests.xml),
# iteration.json (the paper objective, eager: seconds per iteration, cost in classifier
# forwards, per-term costs as the median of repeats with their spread, what cuDNN
# determinism costs, the same iterations captured whole as CUDA graphs), quality.json and
# draft.json (the bundled sample with the classifier terms on, in process and through a real
# magic-server process: submit to first preview and to result), memory_24mp.json (peak GPU
# memory, 24 MP photo, 1000 px edit), paper.json (the paper's setting: 18,000 iterations,
# 5 samples, 224 px, captured when the engine can: `capture` says whether it was and why not),
# one .log per step, steps.tsv, and summary.json with the figures docs/bench_engine_gpu.json
# needs (device_name, paper_seconds, quality_seconds, first_preview_s, sec_per_iteration,
# iteration_cost_in_forwards, peak_gpu_mb; null when a step did not produce them: nothing is
# estimated). The classifier runs with random weights written as a safetensors file and loaded
# as installed weights are (bench_engine --weights random-file): its terms are on, as for users.
# Each step has its own time limit (15 + 70 + 55 + 140 + 55 + 35 + at most 30 s, within the
# 400 s budget); the paper run is stopped after 120 s and then says how far it got. Exit status 0 when every step succeeded, 1 otherwise (the archive is
# written either way).
#
# Needs a Python with torch (CUDA), numpy, Pillow, scipy, scikit-image, safetensors, pytest and
# pyzmq. pyzmq is missing on the lent machine: run `--fetch-wheels` here first; the wheels in
# .whl (or $GPU_CHECK_WHEELS) are installed into a temporary folder when `import zmq` fails
# (name .whl in the device call's `carry`).
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_BUDGET_S (default
# 400), GPU_CHECK_STEPS (the steps to run, default all: env gpu_tests iteration quality draft
# memory_24mp paper). --cpu-smoke (or GPU_CHECK_SMOKE=1) runs the same steps on the CPU with
# tiny settings, to check this script without a GPU; its figures mean nothing.

set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE="${GPU_CHECK_SMOKE:-0}"
WHEELS="${GPU_CHECK_WHEELS:-.whl}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

if [ "${1:-}" = "--fetch-wheels" ]; then
	# pyzmq for the GPU machine's Python 3.12 on x86-64 (no other dependency: it bundles libzmq)
	mkdir -p "$WHEELS"
	exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" pyzmq
fi
if [ "${1:-}" = "--cpu-smoke" ]; then
	SMOKE=1
	shift
fi

DIR="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
ARCHIVE="$DIR/gpu_check.tar.gz"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
RUN="$WORK/gpu_check"
mkdir -p "$RUN"
BUDGET_S="${GPU_CHECK_BUDGET_S:-400}"
# a loaded CPU (smoke runs) gets longer step limits; the GPU run keeps the 7-minute plan
SCALE=1
[ "$SMOKE" = 1 ] && SCALE=10 && BUDGET_S="${GPU_CHECK_BUDGET_S:-4000}"
STEPS_WANTED=" ${GPU_CHECK_STEPS:-env gpu_tests iteration quality draft memory_24mp paper} "
START=$(date +%s)
STEPS="$RUN/steps.tsv"
: >"$STEPS"

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# The archive is made however the script ends (a step failing, a signal).
finish() {
	tar -czf "$ARCHIVE.part" -C "$WORK" gpu_check && mv "$ARCHIVE.part" "$ARCHIVE"
	rm -rf "$WORK"
	echo "gpu_check: $ARCHIVE"
}
trap finish EXIT
trap 'exit 1' INT TERM

# step NAME LIMIT_S COMMAND...: run with a time limit, log to NAME.log, note status and time.
step() {
	local name=$1 limit=$(($2 * SCALE)) t0 rc
	shift 2
	case "$STEPS_WANTED" in *" $name "*) ;; *) return 0 ;; esac
	if [ "$limit" -lt 10 ]; then
		printf '%s\t%s\t%s\n' "$name" skipped 0 >>"$STEPS"
		echo "gpu_check: $name skipped (no time left)"
		return 0
	fi
	t0=$(date +%s)
	echo "gpu_check: $name (limit ${limit} s)"
	timeout --kill-after=10 "$limit" "$@" >"$RUN/$name.log" 2>&1
	rc=$?
	printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STEPS"
	echo "gpu_check: $name exit $rc after $(($(date +%s) - t0)) s"
}

# pyzmq (the server path) from carried wheels when this Python lacks it
if ! "$PY" -c 'import zmq' 2>/dev/null; then
	if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
		SITE="$WORK/site"
		"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
			--target "$SITE" "$WHEELS"/*.whl >"$RUN/wheels.log" 2>&1 &&
			export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
	fi
	"$PY" -c 'import zmq' 2>>"$RUN/wheels.log" ||
		echo "gpu_check: no pyzmq (run benchmarks/gpu_check.sh --fetch-wheels first); the" \
			"server steps will fail" | tee -a "$RUN/wheels.log"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step env 15 "$PY" -c '
import json, sys, torch
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda, "device_count": torch.cuda.device_count(),
        "python": sys.version.split()[0]}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(device_name=props.name, gpu_memory_mb=props.total_memory // 2**20,
                bf16=torch.cuda.is_bf16_supported())
else:
    info.update(device_name="CPU")
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
' "$RUN/env.json"

step gpu_tests 70 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider \
	--junitxml="$RUN/gpu_tests.xml" tests/

WEIGHTS=(--weights random-file --weights-dir "$WORK/weights")
if [ "$SMOKE" = 1 ]; then
	BENCH=("$PY" benchmarks/bench_engine.py --device cpu "${WEIGHTS[@]}")
	ITER=(--resolution 32 --batch 1 --iterations 1 --term-repeats 1 --terms classifier)
	QUALITY=(--preset tiny --no-refine --batch 1 --resolution 32 --edit-iterations 2)
	DRAFT=(--preset tiny --no-refine --batch 1 --resolution 32 --edit-iterations 2)
	MEMORY=(--preset tiny --no-refine --batch 1 --resolution 32 --edit-iterations 2)
	PAPER=(--batch 1 --resolution 32 --edit-iterations 4 --mask-net-steps 2)
else
	BENCH=("$PY" benchmarks/bench_engine.py --device cuda "${WEIGHTS[@]}")
	ITER=(--resolution 224 --batch 5 --iterations 8 --term-repeats 2)
	QUALITY=(--preset quality --batch 3 --resolution 224)
	DRAFT=(--preset draft --batch 3 --resolution 224)
	MEMORY=(--preset quality --batch 3 --edit-iterations 30)
	PAPER=(--batch 5 --resolution 224)
fi
step iteration 55 "${BENCH[@]}" "${ITER[@]}" --capture eager --compare-determinism \
	--compare-eager --compare-modes eager,graph --json "$RUN/iteration.json"
# The paper's setting runs captured (auto: its one level captured whole as CUDA graphs, the
# critic's step and the update of x', engine/iteration_capture.py); stopped after
# PAPER_TIME s, it says how far it got (paper_seconds is then null, not estimated).
PAPER_TIME=120
step paper $((PAPER_TIME + 20)) "${BENCH[@]}" --preset paper "${PAPER[@]}" --skip-iterations \
	--time-limit "$PAPER_TIME" --json "$RUN/paper.json"
step quality 55 "${BENCH[@]}" --scene sample "${QUALITY[@]}" --skip-iterations --via-server \
	--server-jobs 1 --time-limit 15 --json "$RUN/quality.json"
step draft 35 "${BENCH[@]}" --scene sample "${DRAFT[@]}" --skip-iterations --via-server \
	--server-jobs 1 --time-limit 8 --json "$RUN/draft.json"
MEMORY_LIMIT=$(($(left) / SCALE - 5))
[ "$MEMORY_LIMIT" -le 30 ] || MEMORY_LIMIT=30
step memory_24mp "$MEMORY_LIMIT" "${BENCH[@]}" --scene photo24mp "${MEMORY[@]}" \
	--skip-iterations --time-limit $((MEMORY_LIMIT - 12)) --json "$RUN/memory_24mp.json"

"$PY" benchmarks/gpu_summary.py "$RUN" "$BUDGET_S" "$(($(date +%s) - START))"
exit $?
