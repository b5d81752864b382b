# recsys-pipeline: two commands for a new user.
#   make demo   installs what is missing, starts services, runs the training DAG on a real dataset
#   make test   runs the test suite (what CI runs)
# Everything else here is what those two are made of.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3.11
VENV := $(CURDIR)/.venv
DBT_VENV := $(CURDIR)/.venv-dbt
COMPOSE_VENV := $(CURDIR)/.venv-compose
BENCH_VENV := $(CURDIR)/.venv-bench
PY := $(VENV)/bin/python
DATASET ?= online-retail
EPOCHS ?= 20
TOP_K ?= 20
# The gate promotes only a significant win on the global time cut (README "Promotion gate"); a first
# run that ties the best baseline publishes its release without a champion. FORCE_PUBLISH=true
# promotes it by hand (the decision records that it was forced).
FORCE_PUBLISH ?= false
# two sessions at once, a whole file each (its module fixtures and order kept; each session has its own
# databases, Airflow home and dbt target: tests/conftest.py); the slowest tests are listed after every
# run (the suite must stay under 20 minutes)
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=12
# The demo's logical date: one run (and one release) per day, so `make demo` twice rewrites it.
DEMO_DATE ?= $(shell date -u +%Y-%m-%d)

# Generated secrets and local settings (never committed); see .env.example.
-include .env

# Airflow runs natively from this checkout: its home, DAGs and plugins are here.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# astronomer-cosmos reports usage to a web service by default; a pipeline here does not
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export AIRFLOW__CORE__PARALLELISM := 4
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG := 4
export AIRFLOW__CORE__EXECUTOR := LocalExecutor
export AIRFLOW__SCHEDULER__PARSING_PROCESSES := 1
export AIRFLOW__API__WORKERS := 1
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT := 120
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: help setup demo demo-bad-load airflow serve bench-serving lint format test test-fast stop services lock clean

help:
	@echo "make demo   - install, start services, run the training DAG on DATASET=$(DATASET), print a summary"
	@echo "make test   - lint, then the test suite against the real MariaDB, S3 API server, dbt and Airflow"
	@echo "make lint   - ruff (lint and format check) on the Python, sqlfluff on the dbt models"
	@echo "make format - let ruff format the Python and sqlfluff fix the dbt models' layout"
	@echo "make demo-bad-load - a refused load (unseen event type): the raw gate's message, Data Docs, quarantine"
	@echo "make airflow - a local Airflow (UI, scheduler, dag-processor, triggerer) with these DAGs; prints URL and login"
	@echo "make serve  - real-time recommendations over HTTP from DATASET's champion (after make demo); docs at /docs"
	@echo "make stop   - stop the local S3 API server started by the demo"
	@echo "make lock   - re-resolve requirements*.in into the pinned requirements*.txt"

.env:
	@$(PYTHON_BASE) scripts/write_env.py .env

# --- installation (idempotent: stamps record what was installed from which lock) ---------

.run/apt.stamp:
	@mkdir -p .run
	@if ! dpkg -s libmariadb-dev pkg-config >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "mysqlclient needs Debian's libmariadb-dev and pkg-config: sudo apt-get install libmariadb-dev pkg-config"; exit 1; \
		fi; \
		echo "installing Debian packages libmariadb-dev pkg-config (for mysqlclient)"; \
		apt-get update -qq && apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; \
	fi
	@touch $@

$(VENV)/.installed: requirements.txt pyproject.toml .run/apt.stamp
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

$(DBT_VENV)/.installed: requirements-dbt.txt
	@test -x $(DBT_VENV)/bin/python || $(PYTHON_BASE) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/python -m pip install -q --upgrade pip
	$(DBT_VENV)/bin/python -m pip install -q -r requirements-dbt.txt
	@touch $@

# only the tests use it: headless Chromium renders the models page against a running Airflow
.run/chromium.stamp:
	@mkdir -p .run
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "the browser test needs Debian's chromium: sudo apt-get install chromium (it is skipped without it)"; \
		else \
			echo "installing Debian's chromium (for the browser test of the Airflow models page)"; \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		fi; \
	fi
	@touch $@

# only the tests use it: `docker-compose config` checks docker-compose.yaml without an engine
$(COMPOSE_VENV)/.installed: requirements-compose.in
	@test -x $(COMPOSE_VENV)/bin/python || $(PYTHON_BASE) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/python -m pip install -q --upgrade pip wheel setuptools "cython<3"
	$(COMPOSE_VENV)/bin/python -m pip install -q --no-build-isolation -r requirements-compose.in
	@touch $@

$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	@mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate >/dev/null
	@touch $@

setup: .env $(VENV)/.installed $(DBT_VENV)/.installed $(AIRFLOW_HOME)/.migrated
	@$(PYTHON_BASE) scripts/write_env.py .env  # an existing .env that others can read is tightened to 600

services: setup
	$(VENV)/bin/recsys services

# --- the two commands -------------------------------------------------------------------

demo: services
	$(VENV)/bin/airflow dags test recsys_training $(DEMO_DATE) \
		--conf '{"dataset": "$(DATASET)", "epochs": $(EPOCHS), "top_k": $(TOP_K), "force_publish": $(FORCE_PUBLISH)}' > .run/demo-dag.log 2>&1 \
		|| { tail -n 60 .run/demo-dag.log; echo "the DAG run failed; full log: .run/demo-dag.log"; exit 1; }
	$(VENV)/bin/recsys summary --dataset "$(DATASET)"

# A local Airflow with the project's DAGs and the models page, in the foreground (Ctrl-C stops every
# component). Authentication is on: log in as admin with the password it prints (generated, never admin).
AIRFLOW_PORT ?= 8080
airflow: services
	$(PY) scripts/airflow_local.py --port $(AIRFLOW_PORT)

# The real-time service in the foreground, answering from the champion `make demo` published.
# Requests need an API key: `.venv/bin/recsys api-key create --name shop-backend` prints one.
SERVING_PORT ?= 8000
serve: services
	$(VENV)/bin/recsys serve --dataset "$(DATASET)" --port $(SERVING_PORT)

# The service under load (bench/serving_load.py): Locust, in an environment of its own, drives each
# endpoint at fixed rates against DATASET's champion; figures in .work/bench/serving.json.
$(BENCH_VENV)/.installed: requirements-bench.in
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON_BASE) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -r requirements-bench.in
	@touch $@

bench-serving: services $(BENCH_VENV)/.installed
	$(PY) bench/serving_load.py --dataset "$(DATASET)" --locust $(BENCH_VENV)/bin/locust

# A refused load, for the README: groceries with an event type never seen before. The raw gate
# stops the run before dbt; the summary shows the message, the Data Docs and the quarantine.
# `make demo DATASET=groceries` afterwards is the good load that trains and publishes. The folder is
# keyed groceries-folder (never the built-in's champion) and allowed by RECSYS_DATASET_DIRS.
BAD_LOAD := $(CURDIR)/.work/bad-load/groceries
demo-bad-load: services
	$(PY) scripts/write_bad_load.py --dataset groceries --out $(BAD_LOAD)
	@if RECSYS_DATASET_DIRS="$(dir $(BAD_LOAD))" $(VENV)/bin/airflow dags test recsys_training $(DEMO_DATE) \
		--conf '{"dataset": "$(BAD_LOAD)", "epochs": $(EPOCHS), "top_k": $(TOP_K)}' > .run/demo-bad-load.log 2>&1; then \
		echo "unexpected: the run passed (log: .run/demo-bad-load.log)"; exit 1; fi
	@echo "the run stopped, as it should (full log: .run/demo-bad-load.log); from the log:"
	@grep -E "failed on table|Data Docs \(raw gate\)|  open: |quarantined|kept as" .run/demo-bad-load.log | sed -e 's/^.*\] //' | sort -u | head -20
	-$(VENV)/bin/recsys summary --dataset "$(BAD_LOAD)"
	$(VENV)/bin/recsys quarantine

# Lint: ruff (configured in pyproject.toml) and sqlfluff (.sqlfluff: jinja templater, MySQL dialect).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/sqlfluff lint dbt_project

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/sqlfluff fix dbt_project

# The tests start what they need themselves (their own databases, user and S3 server); lint comes first.
test: lint setup $(COMPOSE_VENV)/.installed .run/chromium.stamp
	RECSYS_SCREENSHOT_DIR=$(CURDIR)/.work/screenshots $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

stop:
	-$(VENV)/bin/recsys stop

lock:
	@rm -rf .run/lock-venv && $(PYTHON_BASE) -m venv .run/lock-venv
	.run/lock-venv/bin/pip install -q --upgrade pip && .run/lock-venv/bin/pip install -q -r requirements.in
	@{ echo "# Pinned lock of requirements.in (generated by make lock; do not edit by hand)."; .run/lock-venv/bin/pip freeze; } > requirements.txt
	@rm -rf .run/lock-venv && $(PYTHON_BASE) -m venv .run/lock-venv
	.run/lock-venv/bin/pip install -q --upgrade pip && .run/lock-venv/bin/pip install -q -r requirements-dbt.in
	@{ echo "# Pinned lock of requirements-dbt.in (generated by make lock; do not edit by hand)."; .run/lock-venv/bin/pip freeze; } > requirements-dbt.txt
	@rm -rf .run/lock-venv

clean: stop
	rm -rf .work .run .airflow .airflow-test*
