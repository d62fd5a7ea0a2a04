# The two set-up commands of README.md: `make demo` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build on this project's machines (a local wheel); any torch >= 2.2 works elsewhere.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint unit evaluate clean

$(BIN)/hybridrec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/hybridrec

# Train on the real data -> export 3 ONNX models -> start tritonserver -> rank 200 movies for a user -> stop.
demo: install
	$(BIN)/hybridrec demo $(ARGS)

# Every model, ablation and seed on ml-latest-small -> runs/evaluate and docs/results.md (about two hours on 2 cores;
# interrupted runs resume from runs/evaluate/ranks).
evaluate: install
	$(BIN)/hybridrec evaluate --out runs/evaluate --docs docs/results.md $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q -m unit

clean:
	rm -rf runs model_repository/*/1/model.onnx model_repository/artifacts.json loadtests/reports
