# swarmd developer entrypoints. Two commands matter: `make run` and `make test`;
# each does all the set-up it needs, idempotently.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup venv dapr redis chromium chart-tools run demo up test test-fast test-chart test-pubsub lint fmt bench chaos fuzz clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: venv dapr redis chromium ## Python deps, the Dapr runtime, Redis, Chromium (viewer tests)

venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,gateway]'
	@touch $@

dapr: ## build (or reuse) daprd, placement, scheduler and the dapr CLI
	$(PYTHON) scripts/setup_dapr.py

redis: ## install redis-server (the lock store) if missing
	bash scripts/setup_redis.sh

chromium: ## install Debian's chromium for the viewer's browser tests (tests/ui)
	bash scripts/setup_chromium.sh

chart-tools: venv ## helm, helm-unittest, Kubernetes/KEDA schemas for the chart tests
	bash scripts/setup_chart_tools.sh
	$(BIN)/pip install -q -c constraints.txt -r tests/chart/requirements.txt

run: setup ## start the local stack, run a demo swarm, keep serving until Ctrl-C
	$(BIN)/swarmd run

demo: setup ## like run, but exit after printing the result
	$(BIN)/swarmd demo

up: setup ## start the local stack without a demo run
	$(BIN)/swarmd up

lint: venv ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck.py

test: setup chart-tools lint ## the whole test suite: unit, chart, integration
	$(BIN)/pytest

test-chart: chart-tools ## only the Helm chart checks
	$(BIN)/pytest tests/chart

test-pubsub: setup ## the pub/sub tests at full size: 300 tasks, two app SIGKILLs, the replicas' split printed (~10 min)
	SWARMD_PUBSUB_TASKS=300 $(BIN)/pytest -rP tests/integration/test_pubsub.py

test-fast: venv ## unit tests only (no stack)
	$(BIN)/pytest -m "not integration"

fuzz: setup ## schemathesis against a local stack: all checks, examples/coverage/fuzzing, 100 cases per operation
	$(BIN)/python -m tests.fuzz.harness --max-examples 100 --report-dir .data/fuzz

bench: setup ## benchmarks: figures and method in docs/benchmarks.md
	$(BIN)/python -m bench.scatter_gather
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.watchdog_reclaim
	$(BIN)/python -m bench.user_agents
	$(BIN)/python -m bench.pubsub
	$(BIN)/python -m bench.viewer
	$(BIN)/python -m bench.sandbox
	$(BIN)/python -m bench.fairness

# the chaos suite (not in `make test`: ~10 min per seed at the defaults); docs/reliability.md
CHAOS_SEEDS ?= 1 2
CHAOS_ARGS ?= --runs 100 --kills 50 --env SWARMD_STALL_AFTER_S=40
chaos: setup ## seeded kills of every process with runs of all patterns in flight; verdict
	@rc=0; for seed in $(CHAOS_SEEDS); do \
	  $(BIN)/python -m bench.chaos --seed $$seed $(CHAOS_ARGS) || rc=1; done; exit $$rc

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove local run data (logs, state, scheduler data)
	rm -rf .data
