# A newcomer's two commands: `make run` (set up and run the platform) and `make test`.
# Both create .venv/ and install the pinned requirements first, so a fresh clone needs only
# Python 3.11+ and the three services (see README, "Services").

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The entry points (manage.py, wsgi, asgi, celery) default to the production settings; the
# development commands here use the local ones unless the environment names others.
export DJANGO_SETTINGS_MODULE ?= evplatform.settings.local

.PHONY: run test lint format setup migrate demo clean bench bench-engine bench-acn bench-balance bench-gateway bench-auth-flood bench-billing bench-chart bench-runs bench-faults bench-scale bench-tenants bench-cost

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when a requirements file changed.
$(DEPS_STAMP): $(BIN)/python requirements/base.txt requirements/prod.txt requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	@touch $@

setup: $(DEPS_STAMP)

migrate: setup
	$(BIN)/python -m evplatform.bootstrap
	$(BIN)/python manage.py migrate_schemas --noinput

demo: migrate
	$(BIN)/python manage.py seed_demo

# Finds the services (starting embedded PostgreSQL/Redis where none answers), migrates, loads the
# demo and runs web, worker and beat in the foreground: see evplatform/runner.py.
run: setup
	$(BIN)/python -m evplatform.runner

# Browser tests drive Debian's chromium (Playwright cannot download a browser here).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; }; \
	else \
		echo "The browser tests need Debian's chromium: sudo apt-get install chromium fonts-dejavu-core"; exit 1; \
	fi

# The single sign-on tests run a real OpenID Connect provider (npm oidc-provider, Node 20.19+).
OIDC_STAMP := tests/oidc/node_modules/.installed
$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
	@touch $@

test: setup $(CHROMIUM) $(OIDC_STAMP)
	$(BIN)/python -m pytest

# Benchmarks print their figures (README, "Performance"); they use the running services and
# their own databases, never the dev data. Each takes from seconds to a few minutes.
bench: bench-engine bench-acn bench-balance bench-gateway bench-auth-flood bench-billing bench-chart bench-runs bench-faults bench-scale bench-tenants bench-cost

bench-engine: setup
	$(BIN)/python bench/engine_bench.py

bench-acn: setup
	$(BIN)/python bench/acn_compare.py

bench-balance: setup
	$(BIN)/python bench/balance_site_bench.py

bench-gateway: setup
	$(BIN)/python bench/gateway_bench.py

bench-auth-flood: setup
	$(BIN)/python bench/gateway_auth_flood_bench.py

bench-billing: setup
	$(BIN)/python bench/billing_bench.py

bench-cost: setup
	$(BIN)/python bench/cost_bench.py

bench-chart: setup
	$(BIN)/python bench/chart_bench.py


# 200 organisations x 5 sites: migrate_schemas with nothing to do, and one balancing sweep tick.
bench-tenants: setup
	$(BIN)/python bench/tenants_bench.py --baseline

bench-runs: setup
	$(BIN)/python bench/runs_bench.py

# About 30 minutes: every fault the closed loop must survive, on 4/20/40-charger sites in both protocols
# (FAULTS_ARGS="--quick --scenario ignore,redis_cut" for a part).
bench-faults: setup
	$(BIN)/python bench/faults_bench.py $(FAULTS_ARGS)

# About 13 minutes: balancing runs, the 5-minute rollup, the monthly report, the readings API, the
# site chart and storage on an empty database and after 1 and 4 weeks of telemetry history (29M
# readings, half the time is loading them), then migrate_schemas and the beat sweep over 200
# organisations; figures to bench/results/scale-<date>.json (SCALE_ARGS="--days 1 --tenants 20"
# for a shorter run, SCALE_ARGS="--only rollup,rebuild" for a part).
bench-scale: setup
	$(BIN)/python bench/scale_bench.py $(SCALE_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/mypy --strict balancing/engine

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
