# Two entry points: `make demo` (the main job) and `make test`. Both set everything up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint setup sysdeps clean

setup: $(STAMP) sysdeps

# Reinstall only when the package metadata changed.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[all]'
	@touch $(STAMP)

sysdeps:
	@bash tools/install_sysdeps.sh

demo: setup
	cd egs/synth_tail/asr1 && ./run.sh --quick true

test: setup
	$(VENV)/bin/python -m pytest -q --timeout 900 -p no:cacheprovider tests

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow --timeout 3600 tests

lint: setup
	$(VENV)/bin/ruff check asr_adapt tests tools bench
