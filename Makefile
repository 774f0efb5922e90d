# Every target refreshes .venv first, so a fresh clone needs nothing but Python >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-faults soak bench lint

# The runtime dependencies at the versions of deploy/requirements.lock, the image's: the suite runs what ships.
$(STAMP): pyproject.toml deploy/requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "creditstream needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# pip takes no hashes in constraints of an editable install: the pins alone.
	grep -E '^[A-Za-z0-9]' deploy/requirements.lock | sed 's/ *\\$$//' > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c $(VENV)/constraints.txt
	@touch $(STAMP)

install: $(STAMP)

# The embedded system is a development system: it says so explicitly (the services have no default).
AUTH_MODE ?= dev

up: $(STAMP)
	AUTH_MODE=$(AUTH_MODE) $(BIN)/creditstream up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault tests alone, each case under 30 s of load (`make test` runs them under 6 s); prints the table of
# the cases (sent, acknowledged, lost, duplicated, recovery) and keeps it in test-artifacts/faults.md.
FAULT_LOAD_SECONDS ?= 30
test-faults: $(STAMP)
	FAULT_LOAD_SECONDS=$(FAULT_LOAD_SECONDS) $(BIN)/python -m pytest tests/faults -v $(PYTEST_ARGS)

# The mix at half its peak rate for SOAK_MINUTES against `creditstream up`: RSS per process at start and end,
# projection lag, the fault cases' verdict and the audit at the end. Not part of `make test`.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m tests.faults.soak

# Starts its own system in a temp dir (never collides with `make up`); prints a table, writes bench/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
