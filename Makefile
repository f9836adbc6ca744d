# Two commands on a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_QUIET ?= --quiet
PIP_WRAP ?=

.PHONY: install demo test test-long lint typecheck unit bench emulator clean

# The connectors and, beside them, the emulator (its own distribution, a development tool that
# tests, the demo and the benchmarks run against).
$(STAMP): pyproject.toml emulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_WRAP) $(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip
	$(PIP_WRAP) $(BIN)/python -m pip install $(PIP_QUIET) -e '.[dev]' -e ./emulator
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy dynamics_api dynamics_singer emulator/dynamics_emulator tap_dynamics target_dynamics tests bench scripts

unit: $(STAMP)
	$(BIN)/pytest -m "not long"

test: lint typecheck unit

test-long: $(STAMP)
	$(BIN)/pytest -m long

# The first `make demo` sets up .venv with pip's output showing (a quiet install would leave the
# user looking at silence for minutes) and a line of its own whenever pip is silent for 5 s (it
# is while it installs what it downloaded); scripts/demo.py then says what each step does.
demo:
	@test -f $(STAMP) || echo "First run: setting up .venv, about 1-2 minutes (65 s measured on 2 cores with no pip cache and a nearby package index; longer on a slow network), then Meltano installs its plugins (10-30 s)."
	@$(MAKE) --no-print-directory $(STAMP) PIP_QUIET= PIP_WRAP="$(PYTHON) scripts/heartbeat.py"
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python -m bench.run

emulator: $(STAMP)
	$(BIN)/dynamics-emulator

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache output .emulator
