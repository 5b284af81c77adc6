# `make run` and `make test` set everything up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps run test lint typecheck bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres]'
	touch $@

install: $(BIN)/.installed

# OpenDKIM is the independent DKIM verifier of the test suite; Chromium is
# the browser the page tests drive through Playwright (executable_path,
# never Playwright's own browser download).
system-deps:
	@command -v opendkim >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    opendkim opendkim-tools chromium >/dev/null; }

run: install
	$(BIN)/mailer serve --dev --sample

lint: install
	$(BIN)/ruff check mailer tests
	$(BIN)/ruff format --check mailer
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: install system-deps lint typecheck
	$(BIN)/pytest -q

bench: install
	$(BIN)/mailer bench --messages 5000

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
