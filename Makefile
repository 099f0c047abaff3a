# Two commands: `make demo` and `make test`. Both create the virtualenv from the lock file first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DAYS ?= 7
REQUESTS ?= 800
LTRR_HOME ?= $(CURDIR)/.ltrr
export LTRR_HOME
PYTEST_ARGS ?=

.PHONY: help setup demo test test-production test-fast airflow serve bench lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# uv lives in its own folder: `uv pip sync` makes .venv hold exactly the lock file, so uv cannot live there.
UV_VERSION := 0.13.9
UV := .tools/bin/uv

$(UV):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m pip install -q --disable-pip-version-check --target .tools uv==$(UV_VERSION)

# --compile-bytecode: processes may never write .pyc (PYTHONDONTWRITEBYTECODE is set on some machines), and
# recompiling Airflow/GX/Feast/MLflow from source costs every new process about 5 s.
$(BIN)/.installed: requirements.lock pyproject.toml $(UV)
	test -x $(BIN)/python || $(UV) venv -q --python $(PYTHON) $(VENV)
	$(UV) pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

setup: $(BIN)/.installed  ## create .venv from requirements.lock

demo: setup  ## simulate DAYS days (default 7) of traffic, running the real nightly DAG after each
	$(BIN)/ltrr demo --days $(DAYS) --requests-per-day $(REQUESTS)

test: setup  ## run the test suite (unit + integration; production-profile tests skip if services are down)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-production: setup  ## production-profile tests only (PostgreSQL + Redis on 127.0.0.1; docs/production.md)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m production $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -q -m "not integration and not production" $(PYTEST_ARGS)

airflow: setup  ## start Airflow (api-server, scheduler, dag-processor) on SQLite with this project's DAGs
	$(BIN)/ltrr airflow

serve: setup  ## start the online scorer on the current champions
	$(BIN)/ltrr serve

bench: setup  ## long benchmarks; JSON results in bench/results/ (installs wrk, the HTTP load generator, via apt if missing)
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)); } || \
		echo "wrk not installed: bench_serving.py will stop (install it with your package manager)"
	@ls bench/bench_*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done || echo "no benchmarks yet"

lock: $(UV)  ## re-resolve requirements.lock from pyproject.toml
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:  ## remove state (.ltrr) but keep the virtualenv
	rm -rf .ltrr dbt_project/target dbt_project/logs
