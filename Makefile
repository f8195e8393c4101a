# Two commands (see README.md):
#   make quickstart   set up .venv and run the main job on the embedded default (pipelines/train.py)
#   make test         set up .venv and run the whole test suite (what .ci/run calls)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= outputs

.PHONY: setup quickstart test preview bench clean

setup: $(VENV)/.installed

# Rebuilt whenever the dependencies change. pip (not uv/poetry) so that a local CPU wheel of
# torch on pip's find-links is used; see README "Installing".
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "Setting up $(VENV) (first run: about 3-4 minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

quickstart: setup
	$(BIN)/python pipelines/train.py

preview: setup
	$(BIN)/python -m degradation_synth preview --out $(OUT)/preview.png

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m degradation_synth.bench

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
