# ecgx: set-up, the default experiment, the tests. Every target installs what it needs first,
# once: a second `make run` reinstalls and regenerates nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU wheel on these machines; on a GPU machine install the CUDA build of torch into
# .venv first (see README), then `make install` keeps it.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ecgx-installed
PYTEST_ARGS ?=
# The suite in one process per core (pytest-xdist), a test file to a process so its module and
# session fixtures are built once there; each process's torch gets one thread (tests/conftest.py).
# 2 cores: pytest 14 min 34 s from a clean clone, 20 min 35 s in one process (CI, session 5).
PYTEST_PARALLEL ?= -n auto --dist loadfile
BENCH_ARGS ?=

.PHONY: help install data run test test-fast bench lint format clean clean-runs

help:
	@echo "make run        set up, generate the synthetic set, train + test the default experiment"
	@echo "make test       set up, then the whole test suite (CI runs this)"
	@echo "make test-fast  the suite without the slow end-to-end tests"
	@echo "make bench      ecgx bench: every benchmark suite, report in logs/bench/ (BENCH_ARGS=...)"
	@echo "make lint       ruff check + format check"
	@echo "make clean      remove .venv, caches and run outputs (keeps data/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@# --no-compile: byte-compiling every module of every package was most of the install time
	@# (torch 77 s -> 23 s, the rest 221 s -> 84 s on 2 busy cores); Python compiles the modules
	@# a command imports on first use and keeps them.
	@# torch first, pinned to the CPU wheel where one exists: a bare `torch` requirement would
	@# otherwise pull several GB of CUDA packages. Falls through if torch is already present.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --no-compile "$(TORCH_SPEC)" \
		|| echo "note: $(TORCH_SPEC) not found; pip resolves torch from the registry"
	$(BIN)/pip install --no-compile -e ".[dev,export]"
	touch $(STAMP)

install: $(STAMP)

data: install
	$(BIN)/ecgx data synth

run: data
	$(BIN)/ecgx train

test: install
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/ecgx bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check ecgx tests
	$(BIN)/ruff format --check ecgx tests

format: install
	$(BIN)/ruff format ecgx tests
	$(BIN)/ruff check --fix ecgx tests

clean-runs:
	rm -rf logs mlflow.db mlruns mlartifacts

clean: clean-runs
	rm -rf $(VENV) .pytest_cache .ruff_cache data/cache
