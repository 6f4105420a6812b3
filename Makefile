# cps_repro — the two commands a new user types (see README), plus the usual nbdev chores.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cps_repro_installed

.PHONY: venv test test-nbs test-py check-sync export clean-nbs demo readme help

help:
	@echo "make test   - create $(VENV) if absent, install cps_repro with its dev extras, run the whole test suite"
	@echo "make demo   - (arrives with the experiment notebooks) the CPU mini reproduction on generated data"
	@echo "make export - notebooks -> cps_repro/ (nbdev-export) and README.md from nbs/index.ipynb"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $(STAMP)

export: venv
	$(BIN)/nbdev-export
	$(BIN)/python tools/readme.py

# The library must be exactly what the notebooks export, the notebooks must be clean and the README must be
# nbs/index.ipynb: re-run the generators and fail if anything changed.
check-sync: venv
	@before=$$(cat nbs/*.ipynb cps_repro/*.py README.md 2>/dev/null | sha256sum); \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/python tools/readme.py; \
	after=$$(cat nbs/*.ipynb cps_repro/*.py README.md 2>/dev/null | sha256sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "ERROR: nbdev-export / nbdev-clean / README generation changed files: the library, notebooks or README were out of sync."; \
	  echo "       Review 'git diff', run the tests and commit the result."; exit 1; fi; \
	echo "sync check: library, notebooks and README are in step"

test-nbs: venv
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2 --timing

test-py: venv
	$(BIN)/python -m pytest -q -n 2 --durations=15

test: check-sync test-nbs test-py

demo:
	@echo "make demo arrives with the experiment notebooks (exp_mini.ipynb); it is not available yet."; exit 1
