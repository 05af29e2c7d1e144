# Everything runs from the project's own virtualenv; `make test` and `make demo` create it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: venv
	$(BIN)/ruff check batch jobs tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check batch jobs tests bench
	$(BIN)/mypy

demo: venv
	$(BIN)/python -m batch.demo

bench: venv
	$(BIN)/python bench/rate_fidelity.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
