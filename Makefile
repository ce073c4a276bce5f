# wordstream — every entry point a user or CI needs. `.venv` lives in the repo.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint run stop bench cluster-up cluster-down clean

# The Spark driver's class archive (faster starts) is built once, and again after a JDK or pyspark
# change; a failed build only costs speed: Spark starts without it.
setup: $(STAMP)
	-@$(BIN)/python -m wordstream.class_archive build

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@PYTHONPATH=src $(PYTHON) -m wordstream_dev.prerequisites java
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff check --select AIR3 --preview dags/ examples/dags/
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not spark and not airflow and not e2e and not cluster and not drill"

run: setup
	$(BIN)/python -m wordstream_dev.stack run

stop:
	$(BIN)/python -m wordstream_dev.stack stop

bench: setup
	$(BIN)/python -m bench

cluster-up: setup
	$(BIN)/python -m wordstream_dev.cluster up

cluster-down:
	$(BIN)/python -m wordstream_dev.cluster down
