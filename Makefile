# cps_repro — the two commands a new user types (see README), plus the usual nbdev chores.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cps_repro_installed

.PHONY: venv test lint-imports test-nbs test-py check-sync export clean-nbs demo readme help docs browser

help:
	@echo "make test   - create $(VENV) if absent, install cps_repro with its dev extras, run the whole test suite"
	@echo "make demo   - the CPU mini reproduction on generated data (under 10 minutes on 2 cores), its table and figures"
	@echo "make export - notebooks -> cps_repro/ (nbdev-export) and README.md from nbs/index.ipynb"
	@echo "make docs   - the documentation site from the committed notebooks into _docs/ (open _docs/index.html)"

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
	@before=$$(cat nbs/*.ipynb cps_repro/*.py cps_repro/methods/*.py README.md 2>/dev/null | sha256sum); \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/python tools/readme.py; \
	after=$$(cat nbs/*.ipynb cps_repro/*.py cps_repro/methods/*.py README.md 2>/dev/null | sha256sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "ERROR: nbdev-export / nbdev-clean / README generation changed files: the library, notebooks or README were out of sync."; \
	  echo "       Review 'git diff', run the tests and commit the result."; exit 1; fi; \
	echo "sync check: library, notebooks and README are in step"

test-nbs: venv
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2 --timing

test-py: venv
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint-imports: venv
	$(BIN)/lint-imports

# The site test (tests/test_docs.py) opens the pages in headless Chromium: Debian's package, installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null; \
	    else echo "no chromium and no way to install it (needs root and apt-get): tests/test_docs.py will skip its browser test"; fi; }

# The documentation site (Sphinx + MyST-NB, docs/conf.py) built from the committed notebooks, nothing executed.
docs: venv
	$(BIN)/python tools/build_docs.py

# The chapters are executed with a real kernel and compared with their committed outputs by tests/test_chapters_executed.py
# (the cells nbdev-test runs); `make test-nbs` stays for a quick in-process run of the chapters.
test: check-sync lint-imports browser test-py

# The CPU mini reproduction at 1/16 labels, one seed, both cores: supervised, CPS and CPS+CutMix at the demo's shorter
# schedule (DEMO_ITERS=demo: MINI_DEMO_ITERS iterations, under 10 minutes), then the tables and figures built from its
# results. DEMO_ITERS=20 makes a quick plumbing check; an empty DEMO_ITERS= runs the table's schedule (MINI_ITERS).
DEMO ?= demo_out
DEMO_ITERS ?= demo
demo: venv
	@mkdir -p $(DEMO)
	$(BIN)/papermill nbs/exp_mini.ipynb $(DEMO)/exp_mini.ipynb -y "splits: ['1_16']" -p arms none -p eval_set val -y "seeds: [0]" \
	  -y "full_ceiling: false" -y "self_training: []" $(if $(DEMO_ITERS),-p iters $(DEMO_ITERS)) -p out_dir $(DEMO)/results -p data_root $(DEMO)/data
	$(BIN)/papermill nbs/paper_tables.ipynb $(DEMO)/paper_tables.ipynb -p results_dir $(DEMO)/results -p out_dir $(DEMO)/reports
	$(BIN)/papermill nbs/paper_figures.ipynb $(DEMO)/paper_figures.ipynb -p results_dir $(DEMO)/results -p out_dir $(DEMO)/reports
	@echo ""
	@echo "Executed notebooks: $(DEMO)/exp_mini.ipynb, $(DEMO)/paper_tables.ipynb, $(DEMO)/paper_figures.ipynb"
	@echo "Runs (result.json, metrics, TensorBoard): $(DEMO)/results/"
	@echo "Tables and figures: $$(ls $(DEMO)/reports | tr '\n' ' ')"
	@echo "  in $(DEMO)/reports/ (mini table: mini_table.md; the run table also at $(DEMO)/results/data_seed0/mini_table.csv)"
