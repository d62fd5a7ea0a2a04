# The two set-up commands of README.md: `make demo` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build on this project's machines (a local wheel); any torch >= 2.2 works elsewhere.
TORCH ?= torch==2.13.0

.PHONY: install backend demo test lint unit evaluate clean

$(BIN)/hybridrec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/hybridrec

# Triton's official onnxruntime backend, compiled for the bundled tritonserver (about 20 s; once per machine), so
# that `hybridrec serve` serves the DEFAULT config set, exactly what the official container serves. Where cmake or a
# C++ compiler is missing (exit 2) it says so and serving falls back to the python-backend `cpu` set; a failed build
# (exit 1) stops here.
backend: install
	$(BIN)/hybridrec backend build || [ $$? -eq 2 ]

# Train on the real data -> export 3 ONNX models -> start tritonserver -> rank 200 movies for a user -> stop.
demo: backend
	$(BIN)/hybridrec demo $(ARGS)

# Every model, ablation and seed on ml-latest-small -> runs/evaluate and docs/results.md (about 3 hours on 2 cores,
# two fits at a time). Each (model, seed) result is kept in docs/results/cache with a fingerprint of its config,
# committed with the table: an interrupted run resumes, a changed config refits only what it changes, and
# ARGS=--report-only rebuilds the table and its paired tests without fitting.
evaluate: install
	$(BIN)/hybridrec evaluate --out runs/evaluate --cache docs/results/cache --docs docs/results.md $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/python tools/typecheck.py

test: lint backend
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q -m unit

clean:
	rm -rf runs model_repository/*/[0-9]*/model.onnx model_repository/artifacts.json model_repository/titles.json model_repository/catalog.npz
