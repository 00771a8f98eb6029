# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# make test runs its own broker on another port, so it never disturbs a `make run` broker.
TEST_KAFKA_PORT ?= 19092

.PHONY: help install kafka-up kafka-down kafka-status topics migrate run worker simulate \
        lint unit integration test test-all bench clean

help:
	@echo "make run       start Kafka, the pipeline and simulated shop traffic (Ctrl-C stops all)"
	@echo "make test      lint + unit + integration tests against a real broker and ClickHouse"
	@echo "make kafka-up / kafka-down   the local single-node KRaft broker on 127.0.0.1:9092"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --quiet --upgrade pip
	$(BIN)/pip install --quiet --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

kafka-up:
	@deploy/local/kafka.sh up

kafka-down:
	@deploy/local/kafka.sh down

kafka-status:
	@deploy/local/kafka.sh status

topics: install kafka-up
	$(BIN)/journey topics create

migrate: install
	$(BIN)/journey migrate

# Everything in one process (worker + simulator + status); the broker is stopped on the way out.
run: install
	@deploy/local/run.sh $(BIN)/journey run $(ARGS)

worker: install kafka-up
	$(BIN)/journey worker

simulate: install kafka-up
	$(BIN)/journey simulate $(ARGS)

lint: install
	$(BIN)/ruff check streams schemas sinks tests
	$(BIN)/ruff format --check streams schemas sinks tests
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

# The dashboard test drives a real headless Chromium: install Debian's package if missing.
integration: install
	@CHROMIUM="$$(deploy/local/chromium.sh)" && export CHROMIUM && \
		deploy/local/with-kafka.sh $(TEST_KAFKA_PORT) $(BIN)/pytest tests/integration -q

test: install
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) integration

# Its own broker port, so that a `make test` running meanwhile (port 19092) never stops it.
bench: install
	@deploy/local/with-kafka.sh $${BENCH_KAFKA_PORT:-19094} $(BIN)/python -m bench.run $(ARGS)

clean:
	-deploy/local/kafka.sh down
	-KAFKA_PORT=$(TEST_KAFKA_PORT) deploy/local/kafka.sh down
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
