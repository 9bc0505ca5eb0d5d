# Two commands do all the set-up on a fresh machine (Python >= 3.10 with venv):
#   make run    create .venv, install kdlightning, run the main job on digits
#   make test   create .venv, install kdlightning with its dev extras, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: run test lint format clean

# Re-install only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

# One OpenMP thread unless set: faster for these small models on a few cores, and the thread
# count changes float rounding, so the README's figures (measured with one) reproduce exactly.
run: $(VENV)/.installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m kdlightning.train $(ARGS)

# One OpenMP thread per process unless set: the suite starts DDP and multirun processes side by
# side, and spinning threads on two cores made small layers many times slower. -n auto: one
# pytest-xdist worker per core (every test keeps to its own tmp_path, so they run side by side);
# worksteal: an idle worker takes queued tests from the busy one (conftest.py starts slow ones first).
test: $(VENV)/.installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n auto --dist worksteal $(ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache
