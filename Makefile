# Two commands do all the set-up on a fresh machine:
#   make train    creates .venv, installs the project (CPU JAX), trains the default experiment
#   make test     same environment, runs the test suite but the tests marked slow (~15 min on 2 cores)
# `make test-slow` runs those (full-length resumes, acceptance runs, the model zoo; CI runs both).
# gymnax (the rl extra) caps jax < 0.12, so .venv has jax 0.11. `make test-newest` runs `make test`'s
# suite in .venv-newest, without the rl extra, on the newest jax pip resolves (0.12.x); tests needing
# gymnax skip.
# JAX=cuda or JAX=tpu installs that JAX build instead; ARGS passes overrides to training.
# jax >= 0.11 and flax >= 0.12.9 need Python >= 3.12: the first such interpreter on PATH, else pyenv's.
PYTHON ?= $(firstword $(foreach p,python3.12 python3.13 python3 $(wildcard $(HOME)/.pyenv/versions/3.1[23]*/bin/python3),\
  $(shell $(p) -c 'import sys; print(sys.executable if sys.version_info >= (3, 12) else "")' 2>/dev/null)) \
  python3.12)
JAX ?= cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(JAX)
NEWEST := .venv-newest
NEWEST_STAMP := $(NEWEST)/.installed-$(JAX)
ARGS ?=
export JAX_PLATFORMS ?= $(if $(filter cpu,$(JAX)),cpu,)

.PHONY: install install-newest train test test-slow test-newest lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@! test -x $(BIN)/python || $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' || \
	  { echo "error: $(VENV) has Python < 3.12, which jax >= 0.11 does not support: make clean, then make"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,$(JAX)]"
	rm -f $(VENV)/.installed-* && touch $@

install-newest: $(NEWEST_STAMP)

$(NEWEST_STAMP): pyproject.toml
	test -x $(NEWEST)/bin/python || $(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install -q --upgrade pip
	$(NEWEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[$(JAX),sweep,export,test]"
	rm -f $(NEWEST)/.installed-* && touch $@

train: install
	$(BIN)/python -m research.train $(ARGS)

test: install
	$(BIN)/python -m pytest -q -n 2 -rs --durations=15 -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -n 2 -rs --durations=15 -m slow

test-newest: install-newest
	$(NEWEST)/bin/python -m pytest -q -n 2 -rs --durations=15 -m "not slow"

lint: install
	$(BIN)/ruff check research tests bench
	$(BIN)/ruff format --check research tests bench

bench: install
	$(BIN)/python bench/loop_vs_pure_jax.py

clean:
	rm -rf $(VENV) $(NEWEST) runs multirun .pytest_cache
