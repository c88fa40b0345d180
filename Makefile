# Everything a fresh clone needs: `make dev` runs the system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-all install bench bench-peers synth deploy clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Conveyor needs Python 3.11 or newer, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,infra]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/conveyor dev

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Conveyor side by side with procrastinate, pgqueuer, graphile-worker and pg-boss (bench/peers/run.py; issue 16).
# BENCH_ARGS="--quick --only conveyor,pgboss" for a smoke run of a selection.
bench/peers/node/node_modules/.installed: bench/peers/node/package.json bench/peers/node/package-lock.json
	cd bench/peers/node && npm ci --no-audit --no-fund
	touch $@

bench-peers: $(STAMP) bench/peers/node/node_modules/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.peers.run $(BENCH_ARGS)

# The CDK CLI is pinned in package.json; the Lambda layer is built with pip (no Docker) into .build/.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION = 20
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

synth: $(STAMP) node_modules/.installed
	npx cdk synth --quiet

deploy: $(STAMP) node_modules/.installed
	npx cdk deploy

# As root in a folder the server's user cannot enter, `make dev` keeps its data in /var/tmp under a hash of the
# data folder's path (shared/local/postgres.py): remove that too.
clean:
	rm -rf "/var/tmp/conveyor-pgdata-$$(printf %s "$$(realpath -m .conveyor/pgdata)" | sha256sum | cut -c1-8)"
	rm -rf $(VENV) .conveyor cdk.out .build node_modules .pytest_cache
