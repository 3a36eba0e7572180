# Two commands do all the set-up on a fresh Debian/Python 3.11 CPU machine:
#   make run    # the main job on the embedded default (Fashion-MNIST, embedded teacher)
#   make test   # the test suite
# Both create .venv if missing, install the CPU build of torch 2.13.0 first (so nothing pulls a
# CUDA build), then rkd and its test extras, and Debian's dataset-fashion-mnist if missing.
#   make docs   # the documentation site into site/ (mkdocs build --strict: any warning fails)

VENV     ?= .venv
PYTHON   ?= python3
TORCH    ?= torch==2.13.0
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.rkd-installed
FMNIST   := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# pytest-xdist workers (0: none, the tests run in this process), each given whole test files: a file's
# module and session fixtures (trained toy runs, the SLURM cluster) are then built by one worker only
TEST_WORKERS ?= 2
XDIST    := -n $(TEST_WORKERS) --dist loadfile

.PHONY: run quick test test-slow test-all install data slow-deps docs docs-deps lint lint-deps all-deps clean-venv bench bench-costs

install: $(STAMP)

# The later installs are pinned to the torch that TORCH installed (constraints.txt pins the CPU default; a
# TORCH="torch==2.5.1" install on a GPU cluster must not be replaced by it): $(PINS) is constraints.txt with
# its torch line swapped for the installed version.
PINS     := $(VENV)/constraints.txt

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	@$(MAKE) -s pins VENV=$(VENV) PY=$(PY)
	$(PY) -m pip install -q -c $(PINS) -e ".[dev]"
	@touch $@

.PHONY: pins
pins:
	@{ grep -v '^torch[=<>~ ]' constraints.txt; $(PY) -c 'import torch; print("torch==" + torch.__version__.split("+")[0])'; } > $(PINS)

data: $(FMNIST)

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist

run: install data
	$(VENV)/bin/rkd run

quick: install data
	$(VENV)/bin/rkd run --quick

test: install data
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS) tests

# The slow tests: real multi-process launches (DDP over gloo, DeepSpeed ZeRO-2) and a real SLURM
# cluster (tests/slurm_ci/setup_slurm.sh installs and starts it; root only). slow-deps adds what
# they need beyond `make install`: DeepSpeed, and a C++ toolchain + Python headers for the CPU
# communication op DeepSpeed compiles on first use (cached in ~/.cache/torch_extensions).
test-slow: install data slow-deps
	$(PY) -m pytest -q -m slow $(XDIST) $(PYTEST_ARGS) tests

DS_STAMP := $(VENV)/.rkd-deepspeed

slow-deps: $(DS_STAMP)

$(DS_STAMP): $(STAMP)
	@$(MAKE) -s toolchain VENV=$(VENV) PY=$(PY)
	$(PY) -m pip install -q -c $(PINS) -e ".[dev,deepspeed]"
	@touch $@

.PHONY: toolchain
toolchain:
	@command -v g++ >/dev/null && $(PY) -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ python3-dev; }

# The documentation site (mkdocs, the material theme, mkdocstrings: the `docs` extra). docs/hooks/
# generates the configuration reference and the API pages from the code, so the build imports rkd.
DOCS_STAMP := $(VENV)/.rkd-docs

docs-deps: $(DOCS_STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c $(PINS) -e ".[dev,docs]"
	@touch $@

docs: docs-deps  # NO_MKDOCS_2_WARNING: the material theme's end-of-life banner
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Lint, format check and type check, with the settings in pyproject.toml (the `lint` extra);
# .pre-commit-config.yaml runs the same three tools before each commit.
LINT_STAMP := $(VENV)/.rkd-lint

lint-deps: $(LINT_STAMP)

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -c $(PINS) -e ".[dev,lint]"
	@touch $@

# What slow-deps, docs-deps and lint-deps add, in one pip run (CI: each run resolves and reinstalls rkd)
all-deps: $(STAMP)
	@$(MAKE) -s toolchain VENV=$(VENV) PY=$(PY)
	$(PY) -m pip install -q -c $(PINS) -e ".[dev,deepspeed,docs,lint]"
	@touch $(DS_STAMP) $(DOCS_STAMP) $(LINT_STAMP)

lint: lint-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-all: install data
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS) tests

# RKD-SC vs its baselines, controls and ablations on the default, in resumable (method, seed) cells; runs in
# parts, e.g. BENCH_ARGS="--only vfe,deep-jscc --seeds 0,1 --parallel 2" (python benchmarks/bench.py -h)
BENCH_ARGS ?=
bench: install data
	$(PY) benchmarks/bench.py run --results benchmarks/results/bench $(BENCH_ARGS)

bench-costs: install data  # distillation cost and inference latency
	$(PY) benchmarks/run_all.py --only distill_cost,inference

clean-venv:
	rm -rf $(VENV)
