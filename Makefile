# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE := clients/node

.PHONY: serve test lint check-generated python-tests node-tests generate bench bench-quick soak clean

# Sets up what serving needs (not the dev tools) and runs the service on the
# embedded default (SQLite, ./faultsvc.db); flags go in ARGS="--listen 127.0.0.1:50052".
serve: $(VENV)/.runtime
	$(BIN)/faultsvc serve $(ARGS)

# Sets up and runs the whole test suite, the linters and the type checker.
test: $(VENV)/.installed $(NODE)/node_modules/.installed
	scripts/ensure-services.sh
	$(MAKE) lint check-generated python-tests node-tests

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd $(NODE) && npm run --silent lint:protos && npm run --silent breaking

check-generated:
	cd $(NODE) && npm run --silent check-generated

python-tests:
	$(BIN)/pytest

node-tests:
	cd $(NODE) && PATH="$(CURDIR)/$(BIN):$$PATH" npm test

# The benchmark (bench/README.md): the full run writes what BENCHMARKS.md shows.
bench: $(VENV)/.installed
	scripts/ensure-services.sh
	$(BIN)/python -m bench

bench-quick: $(VENV)/.installed
	scripts/ensure-services.sh
	$(BIN)/python -m bench --quick

soak: $(VENV)/.installed
	scripts/ensure-services.sh
	$(BIN)/python -m bench --soak 300

# Regenerates the Python code of the contract after a change to protos/.
generate: $(VENV)/.installed
	$(BIN)/python scripts/gen_protos.py
	cd $(NODE) && npm run generate

# The runtime dependencies only.
$(VENV)/.runtime: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# The runtime and the dev extra: tests, linters, code generation, benchmarks.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.runtime $@

$(NODE)/node_modules/.installed: $(NODE)/package.json $(NODE)/package-lock.json
	cd $(NODE) && npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) $(NODE)/node_modules
