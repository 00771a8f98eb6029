# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUNTIME_STAMP := $(VENV)/.runtime-stamp
# The one place that sets the ports: the broker listens on KAFKA_PORT (its controller on
# KAFKA_PORT+1), and every journey command of this Makefile connects there.
KAFKA_PORT ?= 9092
export KAFKA_PORT
export JOURNEY_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(KAFKA_PORT)
# make test runs its own broker on another port, so it never disturbs a `make run` broker.
TEST_KAFKA_PORT ?= 19092
# The integration tests run this many at a time (pytest-xdist; 0: one after the other). Each has
# its own topics, group, ports and chdb path; most of a test's time is waiting on processes.
TEST_WORKERS ?= 2

.PHONY: help install install-runtime kafka-up kafka-down kafka-status topics migrate run worker \
        simulate sender compile lint unit integration test bench reset clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)$$/  make \1\t\2/' | expand -t 24
	@echo "  ports: KAFKA_PORT=$(KAFKA_PORT) (make run), TEST_KAFKA_PORT=$(TEST_KAFKA_PORT) (make test); web: JOURNEY_WEB_PORT"

define check_python
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --quiet --upgrade pip
endef

# Runtime only (what `make run` needs); the test tools come with `make install`.
$(RUNTIME_STAMP): pyproject.toml
	$(check_python)
	$(BIN)/pip install --quiet --quiet -e .
	touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml
	$(check_python)
	$(BIN)/pip install --quiet --quiet -e '.[test]'
	touch $(STAMP) $(RUNTIME_STAMP)

install: $(STAMP) ## the virtualenv with the pipeline and the test tools (.venv)

install-runtime: $(RUNTIME_STAMP) ## the virtualenv with the pipeline only

# The worker's hot modules compiled with Cython (streams/compiled.py): only what changed is
# compiled again. `make run` goes on without (pure Python) if there is no C compiler; the tests
# and the bench need the build, since they measure and check what ships.
compile: install-runtime ## compile the hot modules with Cython (pure Python runs without)
	@$(BIN)/journey compile $(COMPILE_ARGS)

kafka-up: ## start the local single-node KRaft broker on 127.0.0.1:$KAFKA_PORT
	@deploy/local/kafka.sh up

kafka-down: ## stop it
	@deploy/local/kafka.sh down

kafka-status: ## is it running?
	@deploy/local/kafka.sh status

topics: install-runtime kafka-up ## create the contract's topics (idempotent)
	$(BIN)/journey topics create

migrate: install-runtime ## apply the ClickHouse migrations
	$(BIN)/journey migrate

# Everything in one process (worker + simulator + email sender + status); the broker is stopped
# on the way out.
run: install-runtime ## Kafka + pipeline + simulated shop + email sender + dashboard; Ctrl-C stops all (ARGS=...)
	@$(MAKE) --no-print-directory compile COMPILE_ARGS=--optional
	@deploy/local/run.sh $(BIN)/journey run $(ARGS)

worker: install-runtime kafka-up ## one worker against the local broker
	$(BIN)/journey worker

simulate: install-runtime kafka-up ## publish simulated shop traffic (ARGS=...)
	$(BIN)/journey simulate $(ARGS)

sender: install-runtime kafka-up ## the reference email sender (JOURNEY_SENDER_* settings)
	$(BIN)/journey sender

lint: install ## ruff + mypy --strict
	$(BIN)/ruff check streams schemas sinks tests
	$(BIN)/ruff format --check streams schemas sinks tests
	$(BIN)/mypy

# Twice: with the compiled modules (what runs), then as Python (what runs without a compiler).
unit: install compile ## unit tests (no broker), on every core
	JOURNEY_EXPECT_COMPILED=1 $(BIN)/pytest tests/unit -q -n auto
	JOURNEY_COMPILED=0 $(BIN)/pytest tests/unit -q -n auto

# The dashboard test drives a real headless Chromium: install Debian's package if missing.
integration: install compile ## integration tests against their own broker on TEST_KAFKA_PORT
	@deploy/local/kcat.sh
	@CHROMIUM="$$(deploy/local/chromium.sh)" && export CHROMIUM && \
		deploy/local/with-kafka.sh $(TEST_KAFKA_PORT) $(BIN)/pytest tests/integration -q -n $(TEST_WORKERS) --dist worksteal --durations=12

# The integration step's tools (kcat, Chromium) and the broker's jars are fetched while lint and
# the unit tests run (downloads: 1-2 minutes of a fresh machine's run); the integration step
# checks them again and fetches what is still missing. One apt-get at a time: they run in turn.
test: install ## lint + unit + integration
	@mkdir -p .local; \
	{ deploy/local/kcat.sh && deploy/local/chromium.sh && deploy/local/kafka.sh fetch; } \
		>.local/prefetch.log 2>&1 & fetching=$$!; \
	$(MAKE) lint && $(MAKE) unit; status=$$?; \
	wait $$fetching || echo "fetching the integration tests' tools failed (.local/prefetch.log); the integration step tries again"; \
	[ $$status -eq 0 ] && $(MAKE) integration

# Its own broker port, so that a `make test` running meanwhile (port 19092) never stops it.
bench: install compile ## performance run, own broker (BENCH_KAFKA_PORT, default 19094)
	@test .local/bench-venv/.stamp -nt pyproject.toml || { $(PYTHON) -m venv .local/bench-venv && .local/bench-venv/bin/pip install --quiet --quiet -e '.[bench]' && touch .local/bench-venv/.stamp; }
	@deploy/local/with-kafka.sh $${BENCH_KAFKA_PORT:-19094} $(BIN)/python -m bench.run $(ARGS)

# A clean start for `make run`: its broker's data (topics, offsets) and every local state
# (journey tables, embedded ClickHouse, the sender's outbox and mails) are deleted.
reset: ## start clean: stop the broker, delete its data and all local state (.local)
	-deploy/local/kafka.sh down
	deploy/local/kafka.sh reset
	rm -rf .local/chdb .local/faust .local/sender .local/mail .local/serving.json

clean: ## stop the brokers and delete .local and the caches
	-deploy/local/kafka.sh down
	-KAFKA_PORT=$(TEST_KAFKA_PORT) deploy/local/kafka.sh down
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
