# Two entry points: `make serve` runs the webhook on the bundled examples,
# `make test` runs the whole suite. Both bootstrap the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench bench-bin bench-core bench-scale fuzz soak clean e2e-bin manifests

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/audit-webhook serve

lint: $(BIN)/.installed
	$(BIN)/ruff check webhook tests bench deploy

# The real kube-apiserver, etcd, kubectl, helm and promtool of the end-to-end tests, built once from Go modules.
e2e-bin:
	bash e2e/build.sh

# deploy/ and the values table of docs/helm.md are the Helm chart rendered: run after changing
# charts/audit-webhook or deploy/overlays/*/values.yaml.
manifests: $(BIN)/.installed e2e-bin
	$(BIN)/python deploy/render.py

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

# The reconciler on 100 and 1,000 Clusters (ARGS="--sizes 100,1000,10000" for more) against the real
# kube-apiserver: first sync, steady API requests, change-to-rollout latency, RSS, handover.
bench-scale: $(BIN)/.installed e2e-bin
	$(BIN)/python bench/scale.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .e2e-bin
