# Two entry points: `make serve` runs the webhook on the bundled examples,
# `make test` runs the whole suite. Both bootstrap the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench bench-bin bench-core fuzz soak clean e2e-bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/audit-webhook serve

lint: $(BIN)/.installed
	$(BIN)/ruff check webhook tests bench

# The real kube-apiserver, etcd and kubectl of the end-to-end tests, built once from Go modules.
e2e-bin:
	bash e2e/build.sh

test: lint e2e-bin
	$(BIN)/python -m pytest -q

# The long fuzz run: FUZZ_EXAMPLES generated reviews per endpoint against a live server.
FUZZ_EXAMPLES ?= 10000
fuzz: $(BIN)/.installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

# Steady load while certificates rotate, kube-apiserver restarts and goes away, and the webhook stops.
soak: $(BIN)/.installed e2e-bin
	$(BIN)/python bench/soak.py $(ARGS)

# The benchmark's load generator (vegeta), built once from Go modules; not needed by `make test`.
bench-bin:
	bash bench/build.sh

bench: $(BIN)/.installed bench-bin
	$(BIN)/python bench/bench.py $(ARGS)

# Per-request CPU of parse, decision, answer and the whole handler, against the bare floor.
bench-core: $(BIN)/.installed
	$(BIN)/python bench/core.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .e2e-bin
