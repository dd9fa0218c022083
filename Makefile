# istiod-lite: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test lint golden demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/lint-imports

test: install lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

golden: install
	UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/test_golden.py

clean:
	rm -rf $(VENV) build src/*.egg-info
