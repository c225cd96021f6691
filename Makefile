# The two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-all bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.installed-base

# MapLibre GL JS for the offline map page, from the npm registry (never a CDN); see web/package.json.
WEB := web/node_modules/.package-lock.json
$(WEB): web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error

demo: $(VENV)/.installed-base $(WEB)
	$(BIN)/compoundwatch demo

# Lint (ruff) and type check (mypy) first: either failing fails `make test` (and so CI) before pytest runs.
test: $(VENV)/.installed-dev $(WEB)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/mypy pipeline
	$(BIN)/python -m pytest -n 2 -q --nbmake tests notebooks

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.run

# Refresh the constraints (lock) file from the current environment after changing pyproject.toml.
lock: $(VENV)/.installed-dev
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^compoundwatch' > constraints.txt

clean:
	rm -rf data .dvc/cache .dvc/tmp metrics.json
