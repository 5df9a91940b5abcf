# The two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint fast install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/nurture run

lint: $(STAMP)
	$(BIN)/ruff check automation web tests bench migrations/env.py
	$(BIN)/ruff format --check automation web tests bench migrations/env.py
	$(BIN)/mypy automation

test: lint
	$(BIN)/pytest

# SQLite only, no servers: the quick loop while editing.
fast: $(STAMP)
	$(BIN)/pytest -m "not postgres and not redis and not browser and not slow" -q

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
