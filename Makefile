# `make run` and `make test` set everything up on a bare machine, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint typecheck pytest bench demo clean chromium wrk frameworks-venvs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[all]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $@ $(VENV)/.run-deps

## Start interlock on its embedded default (proxy :4141, admin and UI :4142, store ./interlock.db).
run: $(VENV)/.run-deps
	$(BIN)/interlock serve

## Set up and run every test: lint, types, the suite (browser tests included).
test: $(VENV)/.test-deps chromium lint typecheck pytest

lint: $(VENV)/.test-deps
	$(BIN)/ruff check interlock tests bench examples

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

pytest: $(VENV)/.test-deps $(VENV)-mcp1/.ok .venv-phoenix/.installed frameworks-venvs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Arize Phoenix, the real OTLP backend of tests/tracing/test_otel_phoenix.py, in its own venv.
.venv-phoenix/.installed: tests/tracing/phoenix.py | $(VENV)/.test-deps
	$(BIN)/python -m tests.tracing.phoenix install
	touch $@

# The agent frameworks of tests/frameworks (LangGraph, CrewAI, AutoGen, Prefect, Temporal, litellm), one
# virtualenv each under .venvs/, from examples/<name>/requirements.txt; kept until that file changes.
frameworks-venvs: $(VENV)/.test-deps
	$(BIN)/python -m tests.frameworks.venvs

# The mcp SDK 1.x for tests/mcp: it is `import mcp` like the 2.x in $(VENV), so it gets its own venv.
$(VENV)-mcp1/.ok:
	$(PYTHON) -m venv $(VENV)-mcp1
	$(VENV)-mcp1/bin/python -m pip --disable-pip-version-check -q install 'mcp>=1.20,<2'
	touch $@

# The browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The load generator for bench/ (Debian's package; a Python client would be the bottleneck on 2 cores).
wrk:
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)

## Measure throughput, latency, first byte and memory; writes bench/RESULTS.md (~5 min; BENCH_ARGS=--help).
bench: $(VENV)/.test-deps wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

## A scripted agent and upstream producing a few sessions; then open http://127.0.0.1:4142/.
demo: $(VENV)/.run-deps
	$(BIN)/interlock demo

clean:
	rm -rf $(VENV) $(VENV)-mcp1 .venv-phoenix .venvs .pytest_cache .mypy_cache .ruff_cache
