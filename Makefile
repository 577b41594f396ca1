# Every target sets up what it needs itself: a .venv with the package, and
# Debian packages (redis-server) through apt-get when they are missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends

.PHONY: test test-fast lint bench demo venv redis-server chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-%: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

venv: $(VENV)/.installed-test

redis-server:
	@command -v redis-server >/dev/null || ( $(APT_INSTALL) redis-server )

# The browser tests drive Debian's Chromium: Playwright's own download cannot work here.
chromium:
	@command -v chromium >/dev/null || ( $(APT_INSTALL) chromium )

test: $(VENV)/.installed-test redis-server chromium
	$(PY) -m ruff check .
	$(PY) -m pytest -p no:cacheprovider

test-fast: $(VENV)/.installed-test redis-server
	$(PY) -m pytest -p no:cacheprovider -m "not slow"

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed-bench redis-server
	$(PY) -m bench

demo: $(VENV)/.installed-demo redis-server
	$(PY) demo/run.py
