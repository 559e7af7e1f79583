# `make run` and `make test` set everything up on a bare machine, then run. Everything they install
# comes from a lock with hashes (README: "Dependencies are locked"): uv.lock for .venv, a
# requirements.lock beside each requirements file for every other virtualenv; `make lock` refreshes them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(CURDIR)/.venv-uv/bin/uv
# uv uses this machine's python3 and never downloads an interpreter; it ignores pip's configuration.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV
# --locked: install exactly uv.lock, and refuse (one line) if pyproject.toml changed without `make lock`.
SYNC   := $(UV) sync --locked --quiet

.PHONY: servers run test lint typecheck pytest bench demo clean chromium wrk frameworks-venvs examples lock lock-check uv-lock-check

# uv itself, pinned by hash (tools/uv.requirements.lock), installed by pip into a venv of its own.
$(UV): tools/uv.requirements.lock
	@$(PYTHON) -m venv .venv-uv
	@.venv-uv/bin/python -m pip -qq --disable-pip-version-check install --require-hashes --no-deps -r $<
	@touch $@

# `--inexact` for run and examples: they add to what `make test` installed instead of removing it.
$(VENV)/.run-deps: uv.lock pyproject.toml | uv-lock-check
	@echo "interlock: installing uv.lock into $(VENV)" >&2
	@$(SYNC) --inexact --extra all
	@touch $@

$(VENV)/.examples-deps: uv.lock pyproject.toml | uv-lock-check
	@echo "interlock: installing uv.lock with the examples' SDKs into $(VENV)" >&2
	@$(SYNC) --inexact --extra all --extra examples
	@touch $@ $(VENV)/.run-deps

$(VENV)/.test-deps: uv.lock pyproject.toml | uv-lock-check
	@echo "interlock: installing uv.lock with the test tools into $(VENV)" >&2
	@$(SYNC) --extra test
	@touch $@ $(VENV)/.run-deps $(VENV)/.examples-deps

## Start interlock on its embedded default (proxy :4141, admin and UI :4142, store ./interlock.db).
run: $(VENV)/.run-deps
	@$(BIN)/interlock serve

## Set up and run every test: the locks first, then lint, types, the suite (browser tests included).
test: lock-check $(VENV)/.test-deps chromium servers lint typecheck pytest

## .venv with the SDKs the examples use (openai, anthropic, mcp, pytest): see examples/README.md.
examples: $(VENV)/.examples-deps
	@echo "interlock: .venv has the examples' SDKs; each example's command is in examples/README.md" >&2

## Refresh every lock from pyproject.toml and the requirements files (LOCK_ARGS=--upgrade: newest allowed).
lock: | $(UV)
	$(UV) lock $(LOCK_ARGS)
	$(PYTHON) tools/locks.py lock $(LOCK_ARGS)

# Each lock matches what it was made from; a one-line reason per stale lock, before anything is installed.
lock-check: uv-lock-check
	@$(PYTHON) tools/locks.py check

uv-lock-check: | $(UV)
	@out=$$($(UV) lock --check --quiet 2>&1) || { case "$$out" in *"needs to be updated"*) \
	  echo "uv.lock does not match pyproject.toml: run \`make lock\` (and commit uv.lock)" >&2;; *) echo "$$out" >&2;; esac; exit 1; }

## Lint: ruff, then the layering (.importlinter names the layers), no import cycle between modules,
## and no function-level import without a comment saying what it buys (tools/function_imports.py).
lint: $(VENV)/.test-deps
	$(BIN)/ruff check interlock tests bench examples tools
	$(BIN)/lint-imports --no-cache
	$(BIN)/python tools/import_cycles.py
	$(BIN)/python tools/function_imports.py

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

# pytest's exit status, said in words (https://docs.pytest.org/en/stable/reference/exit-codes.html).
pytest: $(VENV)/.test-deps $(VENV)-mcp1/.stamp .venv-phoenix/.stamp frameworks-venvs
	@$(BIN)/python -m pytest $(PYTEST_ARGS) || { status=$$?; case $$status in \
	  1) why="tests failed";; 2) why="interrupted";; 3) why="pytest's internal error";; \
	  4) why="usage error (PYTEST_ARGS?)";; 5) why="no tests collected (PYTEST_ARGS selects nothing)";; *) why="";; esac; \
	  echo "make test: pytest exited $$status$${why:+: $$why}" >&2; exit $$status; }

# Arize Phoenix, the real OTLP backend of tests/otel/test_otel_phoenix.py, in its own venv.
.venv-phoenix/.stamp: tests/otel/phoenix.requirements.lock | $(VENV)/.test-deps
	@$(BIN)/python -m tests.lockedvenv .venv-phoenix $< >/dev/null

# The agent frameworks of tests/frameworks (LangGraph, CrewAI, AutoGen, Prefect, Temporal, litellm, ...), one
# virtualenv each under .venvs/, from examples/<name>/requirements.lock; rebuilt when that lock changes.
frameworks-venvs: $(VENV)/.test-deps
	@$(BIN)/python -m tests.frameworks.venvs >/dev/null

# The mcp SDK 1.x for tests/mcp: it is `import mcp` like the 2.x in $(VENV), so it gets its own venv.
$(VENV)-mcp1/.stamp: tests/mcp/mcp1.requirements.lock | $(VENV)/.test-deps
	@$(BIN)/python -m tests.lockedvenv $(VENV)-mcp1 $< >/dev/null

# The browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The fleet's tests start throwaway PostgreSQL and Redis servers (tests/servers.py): Debian's packages.
servers:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null)

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
	rm -rf $(VENV) $(VENV)-mcp1 .venv-phoenix .venvs .venv-uv .pytest_cache .mypy_cache .ruff_cache

## Build the container image with buildah (no Docker engine or registry needed): docs/image.md.
# IMAGE_BASE=python:3.11-slim uses the official base instead of one made from Debian's mirror.
.PHONY: image
IMAGE      ?= localhost/interlock:latest
IMAGE_BASE ?= localhost/interlock-base:bookworm
# buildah and debootstrap are Debian's packages, installed like chromium and wrk when missing.
image:
	@command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq buildah debootstrap >/dev/null)
	@IMAGE='$(IMAGE)' IMAGE_BASE='$(IMAGE_BASE)' docker/image.sh
