# Two commands (see README.md):
#   make quickstart   set up .venv and run the main job on the embedded default (pipelines/train.py)
#   make test         set up .venv and run the whole test suite (what .ci/run calls)
#   make test-fast    the same without the tests marked slow, for the edit-test loop

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= outputs

.PHONY: setup postgres quickstart test test-fast preview bench clean

setup: $(VENV)/.installed

# Rebuilt whenever the dependencies change. pip (not uv/poetry) so that a local CPU wheel of
# torch on pip's find-links is used; see README "Installing".
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "Setting up $(VENV) (first run: about 3-4 minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

# The PostgreSQL server binaries (initdb, pg_ctl) that tests/infra/test_mlflow_server.py runs the production
# MLflow server against. Debian installs them off PATH, in /usr/lib/postgresql/<major>/bin. Without them
# that test skips (loudly), so CI, which runs as root, installs them.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing PostgreSQL (Debian package postgresql) for tests/infra..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	else \
		echo "PostgreSQL server binaries (initdb) not found: tests/infra/test_mlflow_server.py will be SKIPPED; install them with: sudo apt-get install postgresql"; \
	fi

quickstart: setup
	$(BIN)/python pipelines/train.py

preview: setup
	$(BIN)/python -m degradation_synth preview --out $(OUT)/preview.png

# Test files run on TEST_WORKERS processes (pytest-xdist), a file's tests on one, in collection order (the
# longest files first: tests/conftest.py). Much of a test's time is spent waiting on the subprocesses, servers
# and Ray jobs it starts. Two workers on two cores; with four, Ray nodes time out starting up.
TEST_WORKERS ?= 2

test: setup postgres
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The edit-test loop: everything not marked slow (a few minutes on 2 cores); `make test` runs it all.
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

bench: setup
	$(BIN)/python -m degradation_synth.bench

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
