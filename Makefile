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

# Extra synthesis engines for `asr-adapt synth --engines` (asr_adapt/data/tts_engines.py).
# Optional: synth and its tests run with espeak-ng alone, so a failed install only prints a note.
EXTRA_TTS := flite festival festvox-kallpc16k festvox-us-slt-hts festvox-italp16k festvox-itapc16k \
	festvox-czech-dita festvox-czech-machac festvox-ru

# Headless browser for the live page's test (tests/serve/test_browser.py, `make test-slow`).
# Optional like the TTS engines: without it that test is skipped.
BROWSER := chromium

sysdeps:
	@bash tools/install_sysdeps.sh
	@dpkg -s $(EXTRA_TTS) >/dev/null 2>&1 || { [ "$$(id -u)" -eq 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(EXTRA_TTS) >/dev/null; } || \
	  echo "note: optional TTS engines missing; to add them: sudo apt-get install -y $(EXTRA_TTS)" >&2
	@command -v $(BROWSER) >/dev/null 2>&1 || { [ "$$(id -u)" -eq 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER) >/dev/null; } || \
	  echo "note: optional $(BROWSER) missing (the browser test skips); to add it: sudo apt-get install -y $(BROWSER)" >&2

demo: setup
	cd egs/synth_tail/asr1 && ./run.sh --quick true

test: setup
	$(VENV)/bin/python -m pytest -q --timeout 900 -p no:cacheprovider tests

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow --timeout 3600 tests

lint: setup
	$(VENV)/bin/ruff check asr_adapt tests tools bench
