# Two entry points for a newcomer: `make sample` and `make test`.
# Both create .venv on first use. torch is installed first and on its own so
# that pip never pulls a different (multi-GB) build to satisfy the range in pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.magic-installed

.PHONY: venv sample test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

sample: venv
	$(BIN)/python -m magic_server.sample

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python benchmarks/bench_engine.py --device cpu --resolution 224 --batch 5 --iterations 5

clean:
	rm -rf $(VENV) out
