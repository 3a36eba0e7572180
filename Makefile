# Two commands do all the set-up on a fresh Debian/Python 3.11 CPU machine:
#   make run    # the main job on the embedded default (Fashion-MNIST, embedded teacher)
#   make test   # the test suite
# Both create .venv if missing, install the CPU build of torch 2.13.0 first (so nothing pulls a
# CUDA build), then rkd and its test extras, and Debian's dataset-fashion-mnist if missing.

VENV     ?= .venv
PYTHON   ?= python3
TORCH    ?= torch==2.13.0
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.rkd-installed
FMNIST   := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: run quick test test-all install data clean-venv

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

data: $(FMNIST)

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist

run: install data
	$(VENV)/bin/rkd run

quick: install data
	$(VENV)/bin/rkd run --quick

test: install data
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-all: install data
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean-venv:
	rm -rf $(VENV)
