# Two commands on a fresh machine: `make demo` (the sample season, offline) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The project's Dagster instance: DAGSTER_HOME is data/dagster/ (git-ignored), whose dagster.yaml is
# written from ./dagster.yaml (`make init`, `make demo`); Dagster's state and files all live there.
export DAGSTER_HOME := $(CURDIR)/data/dagster

UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# `make ui PORT=3001 HOST=0.0.0.0`: where the UI listens
PORT ?= 3000
HOST ?= 127.0.0.1

help:
	@echo "make demo   - produce the sample season offline (no key needed) and print where it landed"
	@echo "make test   - run the whole test suite"
	@echo "make ui     - Dagster UI + daemon on http://$(HOST):$(PORT) (make ui PORT=3001 HOST=0.0.0.0)"
	@echo "make bench  - the performance goals, each as a ratio to its baseline in the same run -> bench/results.json"
	@echo "make validate - dg check defs: load the code location and check every definition"
	@echo "make init   - write data/dagster/dagster.yaml from ./dagster.yaml and initialise the instance"

# uv installs the locked environment (uv.lock) quickly and exactly; it is itself pinned.
$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.synced

# The instance's config and storage, made once under a lock before anything runs (ui, validate).
init: install
	$(BIN)/python -m webtoon_assets.instance

demo: install
	$(BIN)/webtoon demo

# Three workers on two cores: much of a test is waiting (on a fake platform, a server, a subprocess).
# loadfile: a module's tests run on one worker, in order, so a season a module makes once is made once.
test: install
	$(BIN)/pytest -n 3 --dist loadfile -q

ui: init
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

bench: install
	$(BIN)/python -m bench.run

validate: init
	$(BIN)/dg check defs

lock: | $(UV)
	$(UV) lock

.PHONY: help install init demo test ui bench validate lock
