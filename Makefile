# Order processing service: one entry point for setup, the local stack, tests and benchmarks.
#
#   make run     set up, start NATS + Cassandra, run the service (see README)
#   make test    set up, start the stack, run every test and lint, stop what it started
#
# Everything installs into the project (.venv, target/, .state/) or the download cache
# (~/.cache/orders-service); nothing needs to be installed by hand.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SETUP_STAMP := $(VENV)/.setup-stamp
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)
# CI has no terminal: keep tools from waiting on one.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONDONTWRITEBYTECODE := 1
CARGO ?= cargo
# Where `make run` serves (the service reads the same variables).
ORDERS_LISTEN ?= 127.0.0.1:50051
ORDERS_METRICS_PORT ?= 9464

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

# ------------------------------------------------------------------ setup and build

$(SETUP_STAMP): pyproject.toml clients/python/pyproject.toml bench/requirements.txt
	@command -v $(PYTHON_BOOTSTRAP) >/dev/null || { echo "error: $(PYTHON_BOOTSTRAP) not found (CPython 3.11+ is required)"; exit 1; }
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found (install Rust with rustup)"; exit 1; }
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q 'maturin>=1.7,<2'
	@# Dependencies only: the extension itself is built by `make build`.
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(VENV)/requirements.txt
	$(PIP) install -q -r $(VENV)/requirements.txt -r bench/requirements.txt
	@# The client SDK and its `orders` command, editable, as its users would install it.
	$(PIP) install -q -e clients/python
	@touch $@

.PHONY: setup
setup: $(SETUP_STAMP) ## create .venv with every Python dependency

.PHONY: build
build: setup ## build the Rust engine into the Python package (server._engine): profile-guided, portable and AVX-512 (ENGINE_PGO=0: no profile)
	PY=$(PY) CARGO=$(CARGO) bash deploy/build_engine.sh

.PHONY: gen
gen: setup ## regenerate every generated stub (Python: server/gen, SDK; Go: clients/go/gen)
	$(PY) proto/generate.py
	clients/go/generate.sh

.PHONY: gen-check
gen-check: setup ## fail if any generated stub is stale
	$(PY) proto/generate.py --check
	clients/go/generate.sh --check

# ------------------------------------------------------------------ local stack

.PHONY: stack-up
stack-up: setup ## start NATS (JetStream) and Cassandra on loopback (idempotent)
	$(PY) -m deploy.stack up

.PHONY: stack-down
stack-down: setup ## stop what stack-up started
	$(PY) -m deploy.stack down

.PHONY: stack-status
stack-status: setup ## show what runs where
	$(PY) -m deploy.stack status

.PHONY: stack-wipe
stack-wipe: setup ## stop the stack and delete its data under .state/
	$(PY) -m deploy.stack down --wipe

# ------------------------------------------------------------------ checks

.PHONY: lint
lint: setup ## ruff, rustfmt and clippy (warnings are errors)
	ruff check .
	ruff format --check .
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features python --quiet -- -D warnings

.PHONY: typecheck
typecheck: build ## mypy on the Python packages; the engine stub is checked against the module
	mypy server deploy clients/python
	$(PY) -m mypy.stubtest server._engine --allowlist .ci/stubtest-allowlist.txt

.PHONY: test-rust
test-rust: ## cargo test (unit and property tests of the engine)
	$(CARGO) test --workspace --quiet

.PHONY: test-python
test-python: build ## pytest, against the running stack
	@# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
	status=0; $(PY) -m pytest -q || status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests"; fi; exit $$status

.PHONY: test-go
test-go: ## Go client: build, vet, gofmt, unit tests (no server needed)
	cd clients/go && go build ./... && go vet ./... \
		&& test -z "$$(gofmt -l . | tee -a /dev/stderr)" && go test ./...

.PHONY: smoke-go
smoke-go: build ## the generated Go client against a real server (stack must be up)
	clients/go/smoke.sh

.PHONY: check
check: gen-check lint typecheck test-rust test-go test-python smoke-go ## every test and lint (needs the stack up)

.PHONY: test
test: build ## set up, start the stack, run every test and lint, stop what it started
	@bash .ci/with-stack.sh $(MAKE) --no-print-directory check

# ------------------------------------------------------------------ run and bench

.PHONY: run
run: build stack-up ## set up, start the stack and the service, run the demo; leaves all running
	$(PY) -m deploy.service start
	$(PY) -m deploy.demo
	@$(PY) -m deploy.stack status -q || true
	@echo
	@echo "The service is running on $(ORDERS_LISTEN) (metrics: http://127.0.0.1:$(ORDERS_METRICS_PORT)/metrics)."
	@echo "Call it:"
	@echo "  grpcurl -plaintext -d '{\"order_id\": \"<id>\"}' $(ORDERS_LISTEN) orders.v1.OrderService/GetOrder"
	@echo "  .venv/bin/orders --address $(ORDERS_LISTEN) create --region demo-eu --customer me --line DEMO-SKU-001:2:1999:EUR"
	@echo "  .venv/bin/python -c 'from orders_client import OrdersClient; print(OrdersClient(\"$(ORDERS_LISTEN)\").get_order(\"<id>\"))'"
	@echo "Stop it: make stop   (service and stack; data stays in .state/, make stack-wipe deletes it)"

.PHONY: stop
stop: ## stop the service and the local stack started by make run
	-$(PY) -m deploy.service stop
	$(PY) -m deploy.stack down

.PHONY: bench
bench: build ## service benchmarks on a fresh stack: bench/results/*.json, report.md, PNGs (~9 min; BENCH_ARGS=--quick ~4 min)
	$(PY) -m deploy.stack down --wipe
	$(PY) bench/run_all.py $(BENCH_ARGS)

.PHONY: bench-core
bench-core: build ## engine benchmark: writes bench/results/core.json
	$(PY) bench/core_bench.py --out bench/results/core.json

.PHONY: bench-core-series
bench-core-series: build ## RUNS (default 6) make bench-core runs, PAUSE s apart: median and range -> bench/results/core_series.json
	$(PY) bench/core_series.py --runs $(or $(RUNS),6) --pause $(or $(PAUSE),0)

.PHONY: bench-core-ab
bench-core-ab: build ## the engine of BASE=<commit> against this build, interleaved runs
	@test -n "$(BASE)" || { echo "usage: make bench-core-ab BASE=<commit> [RUNS=3]"; exit 2; }
	$(PY) bench/core_ab.py $(BASE) --runs $(or $(RUNS),3)

.PHONY: bench-batch-ab
bench-batch-ab: build ## BASE=<commit or .so> against this build, batch by batch in one process
	@test -n "$(BASE)" || { echo "usage: make bench-batch-ab BASE=<commit or .so> [HEAD=<commit or .so>]"; exit 2; }
	$(PY) bench/batch_ab.py $(BASE) $(HEAD)

.PHONY: bench-pgo-ab
bench-pgo-ab: build ## make build's profile-guided engine against the same tree without a profile, batch by batch (~3 min)
	bash bench/pgo_ab.sh

.PHONY: bench-engine-ab
bench-engine-ab: build ## BASE=<commit>'s bench_engine against this tree's, alternating replays of the standard workload
	@test -n "$(BASE)" || { echo "usage: make bench-engine-ab BASE=<commit> [RUNS=6]"; exit 2; }
	$(PY) bench/engine_ab.py $(BASE) --runs $(or $(RUNS),6)

.PHONY: clean
clean: ## remove build outputs and the engine's profile (keeps the rest of .state and the download cache)
	rm -rf target $(VENV) server/_engine*.so .state/pgo
