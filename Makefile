# Every target refreshes .venv first, so a fresh clone needs nothing but Python >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-faults bench lint

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "creditstream needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The embedded system is a development system: it says so explicitly (the services have no default).
AUTH_MODE ?= dev

up: $(STAMP)
	AUTH_MODE=$(AUTH_MODE) $(BIN)/creditstream up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault tests alone (each breaks a system of its own: crashes, outages, a lost bus); also part of `make test`.
test-faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults -v $(PYTEST_ARGS)

# Starts its own system in a temp dir (never collides with `make up`); prints a table, writes bench/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
