# trustrepair — every target runs inside .venv, created from the pinned requirements.lock.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PARAMS ?= params/default.yaml
SEEDS  ?= 0 1 2

# The offline mirror of the paper's datasets, when it sits beside the checkout.
ifeq ($(origin TRUST_DATA_DIR), undefined)
ifneq ($(wildcard ../shared/data/TruthfulQA.csv),)
export TRUST_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: env test lint paper seeds figures planted-grid lab validate plan clean

env: $(STAMP)  ## create or update .venv (no-op when current)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==24.3.1" "setuptools==84.2.1"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check lib tests notebooks benchmarks

test: $(STAMP) lint  ## lint + the test suite (what CI runs)
	$(BIN)/python -m pytest -q

validate: $(STAMP)
	$(BIN)/trustrepair validate $(PARAMS) --data

plan: $(STAMP)  ## model size, memory and time of $(PARAMS), without loading weights
	$(BIN)/trustrepair plan $(PARAMS)

paper: $(STAMP)  ## run every notebook on $(PARAMS); tables/ and figures/ are rebuilt
	$(BIN)/trustrepair run $(PARAMS)

seeds: $(STAMP)  ## rerun $(PARAMS)'s seed-dependent steps for each of $(SEEDS); mean ± std tables
	$(BIN)/trustrepair run $(PARAMS) --seeds $(SEEDS)

figures: $(STAMP)  ## rebuild tables/ and figures/ from saved results, no recompute
	$(BIN)/trustrepair figures $(PARAMS)

planted-grid: $(STAMP)  ## planted recovery under both losses x both dampings (after make paper PARAMS=params/planted.yaml)
	for cell in params/planted_grid/*.yaml; do \
	  $(BIN)/trustrepair run $$cell --reuse runs/planted --only 01 02 02b || exit 1; done
	$(BIN)/python benchmarks/planted_loss_damping.py

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs/ .pytest_cache .ruff_cache
