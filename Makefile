# Two commands on a fresh machine:
#   make run    install (fakes extra too), then start the gateway on the bundled example that needs no provider account
#   make test   install, then run the whole test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE ?= examples/quickstart

.PHONY: install run test lint protos check-protos

$(BIN)/aigw-xds: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fakes]'
	@touch $@

install: $(BIN)/aigw-xds

run: install
	$(BIN)/aigw-xds run $(EXAMPLE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint check-protos
	$(BIN)/python -m pytest -q -p no:cacheprovider

protos: install
	hack/gen-protos.sh

check-protos: install
	hack/gen-protos.sh --check
