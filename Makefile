# The two commands: `make run` and `make test`. Everything else is a helper of those or a benchmark.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

# Embedded defaults: everything under var/ (datasets, MLflow SQLite store, event log); nothing to install.
VAR ?= var
WORLD ?= $(VAR)/data/world-50k
MEMBERS ?= 50000
SEED ?= 42
export RECSYS_DATA_DIR ?= $(WORLD)
export MLFLOW_TRACKING_URI ?= sqlite:///$(abspath $(VAR))/mlflow.db
export RECSYS_MLFLOW_TRACKING_URI ?= $(MLFLOW_TRACKING_URI)

.PHONY: run test venv lint typecheck lock world champion clean bench-data bench-train bench-serve browser redis-tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The image's runtime dependencies, pinned with their hashes (the Dockerfile installs nothing else); run after
# changing pyproject.toml's dependencies (tests/test_image.py checks the two agree).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements.lock

$(WORLD)/manifest.json: | $(STAMP)
	$(BIN)/recsys data generate --members $(MEMBERS) --seed $(SEED) --out $(WORLD)

world: $(WORLD)/manifest.json

# The contextual ranker competes with the CF kinds: the best on the primary metric (EV per request) is champion.
champion: world
	$(BIN)/recsys models ensure-champion --data $(WORLD) --model all,ranker

# A local admin API key (admin and marketer paths) and debug token (debug output) for this run, unless
# RECSYS_ADMIN_API_KEY / RECSYS_DEBUG_TOKEN are set; the hints name RECSYS_PORT.
run: world champion
	$(BIN)/recsys data describe $(WORLD)
	@port="$${RECSYS_PORT:-8000}"; \
	key="$${RECSYS_ADMIN_API_KEY:-local-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(18))')}"; \
	token="$${RECSYS_DEBUG_TOKEN:-local-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(18))')}"; \
	echo "Admin API key for this run (set RECSYS_ADMIN_API_KEY to choose one): $$key"; \
	echo "  reload the cap policy: curl -X POST -H 'X-Api-Key: '$$key localhost:$$port/v1/admin/caps-policy/reload"; \
	echo "  list experiments:      curl -H 'X-Api-Key: '$$key localhost:$$port/v1/experiments"; \
	echo "  marketer pages:        http://localhost:$$port/experiments (log in with the key)"; \
	echo "Debug token for this run (set RECSYS_DEBUG_TOKEN to choose one): $$token"; \
	echo "  suppressed candidates: curl -H 'X-Debug-Token: '$$token -H 'content-type: application/json' \\"; \
	echo "    -d '{\"member_id\": \"M0000042\", \"placement\": \"home\", \"debug\": true}' localhost:$$port/v1/recommendations"; \
	RECSYS_DEBUG_TOKEN="$$token" RECSYS_ADMIN_API_KEY="$$key" $(BIN)/python -m serving

# The end-to-end page tests drive Debian's chromium through Playwright (never `playwright install`: it
# downloads a browser from outside the package registries).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x $(CHROMIUM) || $(SUDO) apt-get install -y -q chromium || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# The tests start Redis servers of their own (a 3-master Redis Cluster, a Redis to freeze and kill): Debian's
# redis-server and redis-cli (package redis-tools). The shared Redis on 6379 is not started here.
redis-tools:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null || \
		$(SUDO) apt-get install -y -q redis-server redis-tools || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server redis-tools; }

# lint-imports first: the layer contracts and "no import cycles" in pyproject.toml's [tool.importlinter].
# Two pytest processes, whole files each (a file's fixtures are built once): the slowest tests wait on services
# they start, load they pace and outages they time, so two overlap well even on two cores (TEST_WORKERS=0 runs
# the suite in one process).
TEST_WORKERS ?= 2
test: $(STAMP) browser redis-tools
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check recsys training serving tests bench
	$(BIN)/hadolint Dockerfile
	$(BIN)/mypy

bench-data: $(STAMP)
	$(BIN)/python bench/bench_data.py

bench-train: $(STAMP)
	$(BIN)/python bench/bench_train.py

bench-serve: $(STAMP)
	$(BIN)/python bench/bench_serve.py

clean:
	rm -rf $(VAR)
