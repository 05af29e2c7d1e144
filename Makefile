# Everything runs from the project's own virtualenv; `make test` and `make demo` create it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench clean .venv-airflow system-deps

# Airflow lives in its own virtualenv (its pins fight ours); tests/test_dag.py runs the DAG with it.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
AIRFLOW_CONSTRAINTS := jobs/airflow-constraints.txt

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make .venv-airflow`: build it if missing or if the pins changed (a stamp, so a half-done
# install is redone, not taken for finished).
.venv-airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): $(AIRFLOW_CONSTRAINTS)
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet -c $(AIRFLOW_CONSTRAINTS) "apache-airflow==3.3.2"
	touch $(AIRFLOW_STAMP)

# System packages the tests need beyond Python: tests/test_html_report.py renders report.html in
# Debian's headless Chromium (and fails without it). As root (CI, a fresh container) `make test`
# installs it with apt-get (~30 s); otherwise it prints the command to run and stops before
# building or running anything.
CHROMIUM := /usr/bin/chromium
SYSTEM_PACKAGES := chromium

system-deps:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing $(SYSTEM_PACKAGES) for tests/test_html_report.py (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	else \
		echo "make test needs $(CHROMIUM) (Debian package: $(SYSTEM_PACKAGES)). Install it, then" \
			"run make test again:" >&2; \
		echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends" \
			"$(SYSTEM_PACKAGES)" >&2; \
		exit 2; \
	fi

# The virtualenvs are built only once the system packages are there (a recursive make: the
# order holds under -j too).
test: system-deps
	$(MAKE) --no-print-directory venv .venv-airflow
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: venv
	$(BIN)/python -m batch.run.demo

# `make bench BENCH_ARGS=--quick` for a smoke run; the full set takes about an hour on 2 cores.
BENCH_SCRIPTS := rate_issue3 rate_fidelity throttle_pressure client_cpu throughput_ceiling \
	journal_cost sequential_baseline memory_plan memory_run hostile_answers inventory_check \
	peer_compare fixed_cost

# Outputs stay in bench-out/ until every script ran (see bench/harness.py: workdir); the
# figures are appended to $(BENCH_JSON) and printed as the Markdown of docs/benchmarks.md.
BENCH_JSON ?= bench-results.jsonl

bench: venv
	set -e; for script in $(BENCH_SCRIPTS); do \
		$(BIN)/python bench/$$script.py --json $(BENCH_JSON) $(BENCH_ARGS); done
	rm -rf bench-out
	$(BIN)/python bench/markdown.py $(BENCH_JSON)

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) demo-out bench-out .pytest_cache .mypy_cache .ruff_cache
