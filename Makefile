# Switchboard: `make run` serves the example channels, `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-full bench-search bench-soak check clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/switchboard -c config.toml run

check: $(STAMP)
	$(BIN)/switchboard -c config.toml check

test: $(STAMP)                  # two workers, each taking whole test files (module fixtures share one daemon)
	$(BIN)/pytest -n 2 --dist loadfile

# `make bench BENCH_PG=postgresql://127.0.0.1:5432/` adds PostgreSQL and [engine] workers to the bench
BENCH_PG ?=

bench: $(STAMP)                 # < 3 min (+ ~3 with BENCH_PG): ingest at 1 and 8 connections against the references, end to end at 8
	$(BIN)/python bench/run.py $(if $(BENCH_PG),--store-url $(BENCH_PG))
	$(if $(BENCH_PG),$(BIN)/python bench/scenarios.py --store-url $(BENCH_PG) --only ingest-workers --runs 1)
	$(BIN)/python bench/scenarios.py --only e2e-8 --runs 3
	$(BIN)/python bench/scenarios.py --only e2e-8-pipelined --runs 3
	$(BIN)/python bench/edit_bench.py
	$(BIN)/python bench/x12_bench.py

bench-full: $(STAMP)            # every scenario, 3 runs each (~20 min), then the CPU per message
	$(BIN)/python bench/run.py --runs 5
	$(BIN)/python bench/scenarios.py --runs 3
	$(BIN)/python bench/cpu_budget.py --runs 3

bench-search: $(STAMP)          # ~3 min: 1,000,000 generated messages, then every kind of search
	$(BIN)/python bench/search_bench.py

bench-soak: $(STAMP)            # ~11 min: 10 min at 300 msg/s end to end, the destination flapping; memory and queue over time
	$(BIN)/python bench/soak.py --minutes 10

clean:
	rm -rf $(VENV) var
