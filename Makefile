# `make run` and `make test` set everything up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps run test test-lowest lint typecheck bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres]'
	touch $@

install: $(BIN)/.installed

# OpenDKIM is the independent DKIM verifier of the test suite; Chromium is
# the browser the page tests drive through Playwright (executable_path,
# never Playwright's own browser download). Postfix (with smtp-source) is
# what `mailer bench --postfix` compares the engine with.
system-deps:
	@command -v opendkim >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && \
	  command -v smtp-source >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    opendkim opendkim-tools chromium postfix >/dev/null; }

run: install
	$(BIN)/mailer serve --dev --sample

lint: install
	$(BIN)/ruff check mailer tests
	$(BIN)/ruff format --check mailer
	$(BIN)/lint-imports
	$(BIN)/hadolint docker/Dockerfile

typecheck: install
	$(BIN)/mypy

test: install system-deps lint typecheck
	$(BIN)/pytest -q

# The declared lower bounds, proved: a second virtualenv with every direct
# dependency at its lowest allowed version (uv's lowest-direct resolution),
# running the suite without the slow end-to-end tests.
LOWEST ?= .venv-lowest
test-lowest: install system-deps
	rm -rf $(LOWEST)
	$(BIN)/uv venv -q --python $(PYTHON) $(LOWEST)
	$(BIN)/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev,postgres]'
	$(LOWEST)/bin/pytest -q -m 'not slow' -p no:cacheprovider

bench: install
	$(BIN)/mailer bench --messages 5000

clean:
	rm -rf $(VENV) $(LOWEST) var .mypy_cache .ruff_cache .pytest_cache
