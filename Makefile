# Two commands do all the setup: `make demo` and `make test`. Each creates .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-long bench lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Test workers (pytest-xdist): one per CPU by default; PYTEST_WORKERS=0 runs in one process.
# The suite is parallel-safe: every server a test starts binds 127.0.0.1 on a port of its own
# (tests/helpers/ports.py), daemons run with --no-ui/--no-mdns, temp dirs and netns names are
# unique, session fixtures (the journeys' crew, PostgreSQL) are per worker. `worksteal`: the
# journeys take 10-60 s each, so idle workers take over queued tests instead of waiting.
PYTEST_WORKERS ?= auto

# Layers (import-linter) and types (mypy, incremental cache) run before the tests: both are
# configured in pyproject.toml and take seconds (issue 14).
test: $(STAMP)
	$(BIN)/ruff check daemon tests bench examples
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist worksteal

test-long: $(STAMP)
	MOCKSYNC_LONG=1 $(BIN)/pytest -q -m 'long or not long' --timeout=1800

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench examples
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info daemon/*.egg-info
