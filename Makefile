# The front door: every target runs `python -m competition <command>` inside .venv,
# creating the venv and installing the package first when needed.
#   make test | make demo | make data folds | make fold=0 train | make fold=0 predict | make cv ...

config ?= configs/demo.yaml
fold ?= 0
gpus ?= 1
set ?=
# Torch is installed before the package, so the build that fits the machine wins:
# the default pins the CPU wheel this machine has on disk; a GPU box passes e.g.
#   make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" test
TORCH ?= torch==2.13.0
BOOT_PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN := $(PY) -m competition
SETS := $(foreach s,$(set),--set $(s))
DEMO_DATA ?= data/demo

.PHONY: help install test test-fast lint demo data validate folds bench clean

help:
	@echo "make test | make demo | make data folds validate | config=... fold=K gpus=N set='k=v ...'"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(BOOT_PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(PY) -m ruff check competition tests bench

$(DEMO_DATA)/train.csv: | install
	$(RUN) data --out $(DEMO_DATA)

data: $(DEMO_DATA)/train.csv

validate: install
	$(RUN) validate -c $(config) $(SETS)

folds: install
	$(RUN) folds -c $(config) $(SETS)

demo: install data
	$(RUN) validate -c $(config) $(SETS)
	$(RUN) folds -c $(config) $(SETS)

bench: install
	$(PY) bench/load_400k.py

clean:
	rm -rf experiments/* submissions/* $(DEMO_DATA)
	touch experiments/.gitkeep submissions/.gitkeep
