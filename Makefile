# The README's two commands. Each one sets up the virtual environment itself when it is missing,
# so both work on a fresh machine with no manual step.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint

$(BIN)/unitscope: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(BIN)/unitscope
	$(BIN)/unitscope demo

test: $(BIN)/unitscope
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/unitscope
	$(BIN)/hadolint Dockerfile
