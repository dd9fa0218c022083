# istiod-lite: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# `make demo DEMO_ONCE=1` sends the requests and exits; DEMO_ARGS passes more flags (e.g. --sotw --free-ports)
DEMO_ONCE ?=
DEMO_ARGS ?=

.PHONY: install test lint golden demo bench clean e2e-kind e2e-ambient

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/lint-imports

test: install lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

golden: install
	UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/test_golden.py

demo: install
	$(BIN)/python examples/demo.py $(if $(DEMO_ONCE),--once,) $(DEMO_ARGS)

# `make bench` runs every benchmark (real istiod-lite and Envoy) and prints tables; never part of `make test`.
# BENCH_ARGS goes to every script, e.g. `make bench BENCH_ARGS="--runs 3"` or `BENCH_ARGS=--smoke`;
# BENCHES picks scripts, e.g. `make bench BENCHES="one_change fanout" BENCH_ARGS="--sizes 100,1000"`.
BENCH_ARGS ?=
BENCHES ?= translate cold_start one_change fanout memory hbone
bench: install
	@for b in $(BENCHES); do echo "== bench/$$b.py $(BENCH_ARGS)"; $(BIN)/python bench/$$b.py $(BENCH_ARGS) || exit 1; done

# Kubernetes end-to-end suite in a kind cluster: needs docker, kind, kubectl and internet (not part of `make test`).
e2e-kind:
	e2e/run.sh

# Optional: istiod-lite as a third-party waypoint inside a real Istio ambient mesh (also needs istioctl).
e2e-ambient: install
	e2e/ambient.sh

clean:
	rm -rf $(VENV) build src/*.egg-info
