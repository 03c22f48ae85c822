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
# The demo's data folder and the synthetic kind written there: configs/demo_vqa.yaml reads the grid answered by ten
# annotators (`data --kind vqa`) from data/demo_vqa; every other config the demo grid.
DEMO_KIND ?= $(if $(filter configs/demo_vqa.yaml,$(config)),vqa,grid)
DEMO_DATA ?= $(if $(filter vqa,$(DEMO_KIND)),data/demo_vqa,data/demo)

.PHONY: help install test test-fast lint mutate docs demo auto data validate folds train predict train-all predict-all cv tune ensemble leaderboard bench clean

help:
	@echo "make test | make demo | make data folds validate | config=... fold=K gpus=N set='k=v ...'"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(BOOT_PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[dev]"
	# DeepSpeed builds against the torch above (its ZeRO paths are tested on CPU); a GPU box compiles its ops on use
	$(PY) -m pip install --no-build-isolation "deepspeed>=0.15"
	touch $@

install: $(VENV)/.installed

# One pytest worker per core (each with one torch thread): the slow tests start first and run side by side.
test: install
	$(PY) -m pytest -q -n auto --dist worksteal

# The unit tier alone: no test trains a model (under a minute on 2 cores); `tier=train` or `tier=e2e` runs another.
tier ?= unit
test-fast: install
	$(PY) -m pytest -q -n auto --dist worksteal -m $(tier)

# Mutation testing of the pure modules (config in pyproject.toml [tool.mutmut]); an hour or more on 2 cores.
mutate: install
	$(PY) -m pip install -q -e ".[mutate]"
	cd $(CURDIR) && $(VENV)/bin/mutmut run --max-children 2; $(VENV)/bin/mutmut results | tail -40

# The README's config key table, regenerated from the config fields' descriptions.
docs: install
	$(PY) -c "import re, pathlib; from competition.docs import key_table; p = pathlib.Path('README.md'); \
	rows = '\n'.join(['| key | default | meaning |', '| --- | --- | --- |', *key_table()]); \
	p.write_text(re.sub(r'(<!-- config-keys:start -->\n).*?(<!-- config-keys:end -->)', lambda m: m[1] + rows + '\n' + m[2], p.read_text(), flags=re.S))"

lint: install
	$(PY) -m ruff check competition tests bench

$(DEMO_DATA)/train.csv: | install
	$(RUN) data --out $(DEMO_DATA) --kind $(DEMO_KIND)

data: $(DEMO_DATA)/train.csv

validate: install
	$(RUN) validate -c $(config) $(SETS)

folds: install
	$(RUN) folds -c $(config) $(SETS)

# make demo: the whole flow on the demo data, resumable (rerun after an interruption): `auto` tries the config's
# portfolio (auto.portfolio) on fold 0, trains the best recipes' folds and ships their blend within `minutes`;
# with='a.yaml b.yaml@7' runs the hand-written flow instead (this config beside those, b at run seed 7).
with ?=
minutes ?= 14
# jobs: workers side by side, a process each sharing the cores
jobs ?= 2
demo: install data
	$(if $(with),$(RUN) demo -c $(config) $(foreach c,$(with),--with $(c)) --jobs $(jobs) $(SETS),$(RUN) auto -c $(config) --minutes $(minutes) --jobs $(jobs) $(SETS))

auto: install
	$(RUN) auto -c $(config) --minutes $(minutes) --jobs $(jobs) $(SETS)

# The demo config's data set is made when missing, so `make fold=0 train` works on a fresh clone
# (the stage itself writes a missing folds.csv).
DEMO_INPUTS := $(if $(filter configs/demo.yaml,$(config)),data)

# gpus=N > 1: N processes through torchrun (DDP; DeepSpeed when train.deepspeed is set).
train: install $(DEMO_INPUTS)
ifeq ($(gpus),1)
	$(RUN) train -c $(config) --fold $(fold) $(SETS)
else
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(gpus) -m competition train -c $(config) --fold $(fold) $(SETS)
endif

# gpus=N > 1: N shard processes, one per device, merged when the last one finishes.
predict: install $(DEMO_INPUTS)
ifeq ($(gpus),1)
	$(RUN) predict -c $(config) --fold $(fold) $(SETS)
else
	@pids=""; for i in $$(seq 0 $$(($(gpus) - 1))); do \
	  CUDA_VISIBLE_DEVICES=$$i $(RUN) predict -c $(config) --fold $(fold) --shard $$i/$(gpus) $(SETS) & pids="$$pids $$!"; \
	done; status=0; for p in $$pids; do wait $$p || status=1; done; exit $$status
endif

train-all: install $(DEMO_INPUTS)
ifeq ($(gpus),1)
	$(RUN) train-all -c $(config) $(SETS)
else
	@k=$$($(PY) -c "from competition.config import load_config; print(load_config('$(config)', '$(set)'.split()).folds.k)"); \
	for f in $$(seq 0 $$((k - 1))); do $(MAKE) --no-print-directory train fold=$$f || exit 1; done
endif

predict-all: install $(DEMO_INPUTS)
ifeq ($(gpus),1)
	$(RUN) predict-all -c $(config) $(SETS)
else
	@k=$$($(PY) -c "from competition.config import load_config; print(load_config('$(config)', '$(set)'.split()).folds.k)"); \
	for f in $$(seq 0 $$((k - 1))); do $(MAKE) --no-print-directory predict fold=$$f || exit 1; done
endif

cv: install
	$(RUN) cv -c $(config) $(SETS)

study ?= decoding
tune: install
	$(RUN) tune -c $(config) --study $(study) $(SETS)

ensemble: install
	$(RUN) ensemble -c $(config) $(SETS)

leaderboard: install
	$(RUN) submit leaderboard -c $(config) $(SETS)

bench: install
	$(PY) bench/load_400k.py
	$(PY) bench/vote_speed.py
	$(PY) bench/predict_throughput.py
	$(PY) bench/cpu_precision.py

clean:
	rm -rf experiments/* submissions/* $(DEMO_DATA)
	touch experiments/.gitkeep submissions/.gitkeep
