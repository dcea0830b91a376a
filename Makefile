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

# Layers (import-linter) and types (mypy, incremental cache) run before the tests: both are
# configured in pyproject.toml and take seconds (issue 14).
test: $(STAMP)
	$(BIN)/ruff check daemon tests bench examples
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q

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
