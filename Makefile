# dcurate developer commands. `make demo` and `make test` work on a fresh machine (they set up .venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BENCH_VENV := .venv-bench
WORKERS ?= 2

.PHONY: setup test test-fast test-faults demo bench bench-setup lint checks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The whole suite but the fault-injection matrix: tests that need ../shared skip when it is absent.
test: setup
	$(BIN)/pytest -q -m "not faults"

# The fault-injection matrix: every stage and phase x kill -9 driver / kill -9 worker / Ctrl-C /
# full disk, then resume == an uninterrupted run (about 200 cases, 15-30 minutes on 2 cores).
test-faults: setup
	$(BIN)/pytest -q -m faults

# Unit tests only (no slow, no ../shared): seconds.
test-fast: setup
	$(BIN)/pytest -q -m "not slow and not shared"

# Generate the demo corpus, run the demo recipe, summarise the output, name the HTML reports.
demo: setup
	$(BIN)/python scripts/make_demo_corpus.py --out data/demo
	$(BIN)/dcurate train-quality --input data/demo/extra/quality_train.jsonl --label-field label --out data/demo/models/quality.bin
	$(BIN)/dcurate train-lm --input data/demo/extra/target.jsonl --order 3 --out data/demo/models/wiki.arpa
	$(BIN)/dcurate run configs/demo.yaml --workers $(WORKERS)
	$(BIN)/dcurate run configs/demo-select.yaml --workers $(WORKERS)
	$(BIN)/dcurate stats data/demo/out --by domain
	@echo "reports: data/demo/out/.dcurate/report.html data/demo/selected/.dcurate/report.html (open in a browser)"

# Peer tools for side-by-side benchmarks live in their own venv (datatrove needs xxhash<4).
bench-setup: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e '.[bench,dev]'
	touch $@

bench: bench-setup
	@for b in scripts/bench_*.py; do echo "== $$b"; $(BENCH_VENV)/bin/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check dcurate tests scripts
	$(BIN)/mypy dcurate --ignore-missing-imports

# The acceptance checks of the open issues (needs ../shared).
checks: setup
	bash ../shared/checks/run-all

clean:
	rm -rf data/demo .pytest_cache
