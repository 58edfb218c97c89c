# One entry point for people and CI. `make test` is what .ci/run runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every package, runtime and development, pinned with hashes: what is tested is what installs
# (docs/decisions/0009-locked-installs.md). pyproject.toml keeps the ranges `pip install` needs.
LOCK   := requirements/lock.txt
SYNCED := $(VENV)/.synced
STAMP  := $(VENV)/.installed
LATEST := .venv-latest
# axe-core for the browser tests' accessibility check (tests/web/test_web_accessibility.py), from
# the npm registry at the version package-lock.json pins; test-only, never part of the package.
AXE_DIR := tests/web/axe
AXE     := $(AXE_DIR)/node_modules/axe-core/axe.min.js
LOCK_COMPILE = $(BIN)/uv pip compile pyproject.toml requirements/build.in --extra dev \
	--extra postgres --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command "make lock" --quiet --output-file $(LOCK)

.PHONY: setup demo test lint lock-check lock relock test-latest format bench clean

# A new venv holding exactly the lock: nothing left over from an earlier lock, nothing resolved
# today. The venv's own pip installs it; --require-hashes refuses any file the lock did not name.
$(SYNCED): $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	touch $(SYNCED)

# Conveyor itself, built by the locked setuptools; then the lock must agree with pyproject.toml.
$(STAMP): $(SYNCED) pyproject.toml requirements/build.in
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python tools/check_lock.py
	touch $(STAMP)

# `npm ci` installs exactly the lock (its integrity hashes checked), nothing resolved today.
$(AXE): $(AXE_DIR)/package.json $(AXE_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing (apt-get install npm): the browser tests need axe-core from $(AXE_DIR)" >&2; exit 1; }
	cd $(AXE_DIR) && npm ci --no-audit --no-fund --ignore-scripts
	touch $(AXE)

setup: $(STAMP) $(AXE)

## The whole story on this machine: a sample service's three commits to production, then stop.
demo: $(STAMP)
	$(BIN)/conveyor demo --exit

## Lint, type-check and run every test (what CI runs).
test: $(STAMP) $(AXE) lint
	$(BIN)/pytest

lint: $(STAMP) lock-check
	$(BIN)/ruff check src tests bench examples tools
	$(BIN)/ruff format --check src tests bench examples tools
	$(BIN)/mypy
	$(BIN)/lint-imports

## Fails when requirements/lock.txt, pyproject.toml and the installed packages disagree.
lock-check: $(STAMP)
	$(BIN)/python tools/check_lock.py

## Refresh the lock on purpose: every package to the newest version pyproject.toml allows.
lock: $(SYNCED)
	$(LOCK_COMPILE) --upgrade

## After editing pyproject.toml: resolve what changed, keep every other pin.
relock: $(SYNCED)
	$(LOCK_COMPILE)

## Not gating: the newest versions pyproject.toml allows, then every test (the next drift, early).
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e '.[dev,postgres]'
	$(LATEST)/bin/python tools/check_lock.py --drift
	$(LATEST)/bin/pytest

format: $(STAMP)
	$(BIN)/ruff format src tests bench examples tools
	$(BIN)/ruff check --fix src tests bench examples tools

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(LATEST) $(AXE_DIR)/node_modules build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
