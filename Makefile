# Developer entry points for the stateful.rollback collection.
# Every target first runs scripts/bootstrap (idempotent, silent when up to date).
# `make test` is what CI runs (.ci/run).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/pytest
# make test runs the test files on this many pytest-xdist workers (one file stays on one worker;
# tests/conftest.py gives each worker a session sandbox of its own). PYTEST_JOBS=0 runs them in one process.
PYTEST_JOBS ?= 2
# Lint only what exists yet.
LINT_PATHS := $(wildcard roles playbooks molecule awx)
# yamllint settings compatible with ansible-lint's own yaml rule; files that
# .gitignore excludes (.venv, .collections, .sandbox, ...) are skipped.
YAMLLINT_CONFIG := {extends: default, ignore-from-file: .gitignore, rules: { \
  line-length: {max: 160}, document-start: disable, \
  comments: {min-spaces-from-content: 1}, comments-indentation: false, \
  braces: {max-spaces-inside: 1}, \
  octal-values: {forbid-implicit-octal: true, forbid-explicit-octal: true}, \
  truthy: {allowed-values: ["true", "false"], check-keys: false}}}

# ruff's classic default rule set (pyflakes + pycodestyle errors): newer ruff
# releases enable more rules by default (pyupgrade, ...), which conflict with
# Ansible's module conventions (__metaclass__ = type, % formatting, typing.*).
# E402/E741 are ignored as ansible-test's pep8 does (modules import after
# DOCUMENTATION/EXAMPLES/RETURN).
RUFF_SELECT := --select E4,E7,E9,F --ignore E402,E741

.PHONY: help bootstrap test unit integration lint sanity demo parity-demo sandbox sandbox-down \
        sandbox-status bench-parity bench-lint bench-live bench-backfill bench-rto bench-load test-faults build awx changelog clean distclean

help: ## show this help
	@echo "Targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## create .venv (requirements-dev.txt) and .collections (FQCN resolution)
	@scripts/bootstrap

test: bootstrap ## what CI runs: lint + sanity + every pytest test (unit and integration)
	@failed=""; \
	$(MAKE) --no-print-directory lint   || failed="$$failed lint"; \
	$(MAKE) --no-print-directory sanity || failed="$$failed sanity"; \
	$(PYTEST) -n $(PYTEST_JOBS) --dist loadfile tests || failed="$$failed pytest"; \
	if [[ -n "$$failed" ]]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: lint, sanity and pytest passed"

unit: bootstrap ## pytest tests/unit
	$(PYTEST) tests/unit

integration: bootstrap ## pytest tests/integration (starts its own PostgreSQL sandbox)
	$(PYTEST) tests/integration

test-faults: bootstrap ## the fault table: every fault-injection test (pytest -m faults, long ones included), then a table
	FAULTS_ALL=1 $(PYTEST) -m faults -o timeout=1800 tests

lint: bootstrap ## ansible-lint (production profile) + yamllint + ruff
ifneq ($(strip $(LINT_PATHS)),)
	$(BIN)/ansible-lint $(LINT_PATHS)
else
	@echo "ansible-lint: no roles/ or playbooks/ yet, skipped"
endif
	$(BIN)/yamllint --strict -d '$(YAMLLINT_CONFIG)' .
	$(BIN)/ruff check --no-cache --target-version py311 --line-length 160 $(RUFF_SELECT) .

sanity: bootstrap ## ansible-test sanity on a temporary ansible_collections/ copy
	scripts/sanity

demo: bootstrap ## start the sandbox, install the demo shop and run the rollback drill (playbooks/demo.yml)
	scripts/sandbox up
	$(BIN)/ansible-playbook -i inventories/sandbox playbooks/demo.yml

parity-demo: bootstrap ## start the sandbox and run the replica-parity demo (playbooks/parity_demo.yml)
	scripts/sandbox up
	$(BIN)/ansible-playbook playbooks/parity_demo.yml

sandbox: bootstrap ## start the PostgreSQL sandbox (primary, standby, subscriber)
	scripts/sandbox up

sandbox-down: bootstrap ## stop the sandbox and delete its data
	scripts/sandbox down

sandbox-status: bootstrap ## show the sandbox's nodes
	scripts/sandbox status

bench-parity: bootstrap ## parity benchmark (make bench-parity ROWS=1000000)
	$(if $(ROWS),ROWS=$(ROWS) )$(BIN)/python benchmarks/bench_parity.py

bench-lint: bootstrap ## lint benchmark: static mode vs squawk on tests/data/migrations (make bench-lint REPEAT=50)
	$(if $(REPEAT),REPEAT=$(REPEAT) )$(BIN)/python benchmarks/bench_lint.py

bench-live: bootstrap ## live-mode benchmark: scratch-database time vs table rows (make bench-live ROWS=200000)
	$(if $(ROWS),ROWS=$(ROWS) )$(BIN)/python benchmarks/bench_live.py

bench-backfill: bootstrap ## backfill benchmark: batched backfill vs one UPDATE (make bench-backfill ROWS=200000 BATCH_SIZE=5000)
	$(if $(ROWS),ROWS=$(ROWS) )$(if $(BATCH_SIZE),BATCH_SIZE=$(BATCH_SIZE) )$(BIN)/python benchmarks/bench_backfill.py

bench-rto: bootstrap ## rollback drill x5 on 1M orders: RTO/RPO (make bench-rto ROWS=200000 RUNS=3 FAULT=alternate)
	$(if $(ROWS),ROWS=$(ROWS) )$(if $(RUNS),RUNS=$(RUNS) )$(if $(FAULT),FAULT=$(FAULT) )$(BIN)/python benchmarks/bench_rto.py

bench-load: bootstrap ## load benchmark: pgbench tps alone vs during a backfill + parity check (make bench-load ROWS=300000 DURATION=20)
	$(if $(ROWS),ROWS=$(ROWS) )$(if $(DURATION),DURATION=$(DURATION) )$(if $(BATCH_SIZE),BATCH_SIZE=$(BATCH_SIZE) )$(if $(MAX_ROWS_PER_SECOND),MAX_ROWS_PER_SECOND=$(MAX_ROWS_PER_SECOND) )$(BIN)/python benchmarks/bench_load.py

build: bootstrap ## build the collection tarball into .build/
	$(BIN)/ansible-galaxy collection build --force --output-path .build .

awx: bootstrap ## configure AWX / Automation Controller from awx/ (needs CONTROLLER_HOST, CONTROLLER_OAUTH_TOKEN)
	$(BIN)/ansible-playbook awx/configure.yml

changelog: bootstrap ## antsibull-changelog lint (changelogs/fragments)
	$(BIN)/antsibull-changelog lint

clean: ## remove build output and caches (keeps .venv, .collections, .sandbox)
	rm -rf .build tests/output .pytest_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and .collections (stop the sandbox with sandbox-down)
	rm -rf $(VENV) .collections
