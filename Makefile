# Set-up and the two everyday jobs. `make demo` and `make test` each create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast lint bench results results-unseen results-long mutants mutants-report mutants-survivors paper-breaks clean

# torch goes in first: pip then finds the CPU wheel on this machine's disk, and the package's
# `torch>=2.2` is already met, so no multi-GB CUDA build is pulled.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/ebmlab demo

# pytest exits 5 when it collected no test: that is a broken suite, never a pass. The suite runs
# on every core (pytest-xdist, one worker per core, tests handed to whichever worker is free:
# the end-to-end tests take up to two minutes each); tests/conftest.py splits torch's threads
# between the workers.
test: $(VENV)/.dev
	@$(PY) -m pytest -q -p no:cacheprovider -n auto --dist worksteal --durations=10; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow and not network"

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

# the standard bench suite into docs/results.md (an hour on 2 CPU cores; continues if cut off)
results: $(VENV)/.installed
	$(VENV)/bin/ebmlab data fetch mnist fashion-mnist animal-mnist
	$(VENV)/bin/ebmlab bench --suite standard --resume --publish docs/results.md

# the unseen suite (12 random densities, 3,000 steps per run) into its own section of
# docs/results.md: about 90 minutes on 2 CPU cores; continues if cut off
results-unseen: $(VENV)/.installed
	$(VENV)/bin/ebmlab bench --suite unseen --resume --publish docs/results.md

# the long suite (every method at its preset's steps on MNIST and Fashion-MNIST, Inception FID on
# 2,000 samples) into its own section of docs/results.md: many hours on 2 CPU cores, so run it
# again after an interruption: finished runs are kept, a cut-off run continues from its last
# checkpoint, and on another machine the runs already published are kept (--continue-published)
results-long: $(VENV)/.installed
	$(VENV)/bin/ebmlab data fetch mnist fashion-mnist animal-mnist
	$(VENV)/bin/ebmlab bench --suite long --continue-published --publish docs/results.md

# Mutation testing (docs/testing.md), never part of `make test`: every target in tools/mutants.toml
# against its own fast tests, one thread, niced; hours in all, and it resumes where it stopped.
# `make mutants FILE=ebmlab/methods/dsm.py` runs one target (FILE takes several, space-separated);
# ARGS=--recheck re-tests only the survivors after new tests, ARGS=--restart starts again.
$(VENV)/.mutation: $(VENV)/.dev
	$(PIP) install -e ".[mutation]"
	touch $@

mutants: $(VENV)/.mutation
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 $(PY) tools/mutants.py run $(ARGS) $(FILE)

mutants-report: $(VENV)/.mutation
	@$(PY) tools/mutants.py report $(FILE)

# each surviving mutant: file:line, operator and diff
mutants-survivors: $(VENV)/.mutation
	@$(PY) tools/mutants.py survivors $(FILE)

# Issue 20's one-line breaks of the papers, each on a copy of the tree: every one must be KILLED.
paper-breaks: $(VENV)/.dev
	OMP_NUM_THREADS=1 $(PY) tools/paper_breaks.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mutants
