# The two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint fast install vendor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Browser libraries from the npm registry, copied into web/static/vendor/ (gitignored).
# Rebuilt only when the package files change; node and npm come from Debian.
FRONTEND := web/frontend
VENDOR_STAMP := web/static/vendor/.built
$(VENDOR_STAMP): $(FRONTEND)/package.json $(FRONTEND)/package-lock.json $(FRONTEND)/vendor.mjs
	@command -v npm >/dev/null || { echo "npm not found: apt-get install nodejs npm"; exit 1; }
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error && node vendor.mjs
	touch $@

vendor: $(VENDOR_STAMP)

run: $(STAMP) $(VENDOR_STAMP)
	$(BIN)/nurture run

lint: $(STAMP)
	$(BIN)/ruff check automation web tests bench migrations/env.py
	$(BIN)/ruff format --check automation web tests bench migrations/env.py
	$(BIN)/mypy automation web
	$(BIN)/lint-imports  # the floors of docs/architecture.md (contracts in pyproject.toml)

# Two pytest-xdist workers (one per core here): each gets its own PostgreSQL and Redis
# database (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: lint $(VENDOR_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS)

# SQLite only, no servers: the quick loop while editing.
fast: $(STAMP)
	$(BIN)/pytest -m "not postgres and not redis and not browser and not slow" -q

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(FRONTEND)/node_modules web/static/vendor
