# Every target sets up what it needs itself: a .venv with the package, and
# Debian packages (redis-server) through apt-get when they are missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends

# A real RethinkDB server binary for test-rethinkdb and bench-rethinkdb: the shared
# build beside this checkout when there is one; RETHINKDB=/path/to/rethinkdb overrides.
RETHINKDB ?= $(wildcard ../shared/rethinkdb/rethinkdb)
RETHINKDB_BIN = $(abspath $(RETHINKDB))

.PHONY: test test-fast test-faults test-channels-redis-oldest test-django-oldest test-rethinkdb test-reql-suite lint bench bench-rethinkdb demo venv redis-server chromium rethinkdb-bin

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
	$(PY) -m mypy
	$(PY) -m pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-channels-redis-oldest
	$(MAKE) --no-print-directory test-django-oldest

# The tests that rely on channels_redis's internals (redis_layer.py, group_sender.py),
# again on the oldest release setup.cfg allows (the newest is the one installed).
CHANNELS_REDIS_OLDEST := 4.2.0
OLDEST_DIR := .cache/channels-redis-$(CHANNELS_REDIS_OLDEST)
CHANNELS_REDIS_TESTS := tests/test_redis_version.py tests/test_group_sender.py \
	tests/test_table_sharing.py tests/bridge/test_workers.py tests/bridge/test_push_bursts.py \
	tests/bridge/test_flow.py

$(OLDEST_DIR): | $(PY)
	$(PY) -m pip install -q --no-deps --target $@ channels-redis==$(CHANNELS_REDIS_OLDEST)

test-channels-redis-oldest: $(VENV)/.installed-test redis-server $(OLDEST_DIR)
	PYTHONPATH=$(abspath $(OLDEST_DIR)) CHANGEFLOW_TEST_CHANNELS_REDIS=$(CHANNELS_REDIS_OLDEST) \
		$(PY) -m pytest -p no:cacheprovider -q $(CHANNELS_REDIS_TESTS)

# The Django matrix: the installed Django is the newest 5.2; the oldest LTS setup.cfg allows
# runs the unit tests again (the consumer in-process, checks, settings, the worker's parts).
# Django 6 needs Python 3.12: on this machine's Python it does not install.
DJANGO_OLDEST := 4.2
DJANGO_OLDEST_DIR := .cache/django-$(DJANGO_OLDEST)

$(DJANGO_OLDEST_DIR): | $(PY)
	$(PY) -m pip install -q --no-deps --target $@ 'Django>=$(DJANGO_OLDEST),<$(DJANGO_OLDEST).999'

test-django-oldest: $(VENV)/.installed-test $(DJANGO_OLDEST_DIR)
	PYTHONPATH=$(abspath $(DJANGO_OLDEST_DIR)) CHANGEFLOW_TEST_DJANGO=$(DJANGO_OLDEST) \
		$(PY) -m pytest -p no:cacheprovider -q -m "not slow" tests/test_*.py

test-fast: $(VENV)/.installed-test redis-server
	$(PY) -m pytest -p no:cacheprovider -m "not slow"

# The fault matrix (tests/faults, slow: also part of `make test`): on the test server, and on
# the real server when there is one (RETHINKDB); then its tables go into docs/reliability.md.
test-faults: $(VENV)/.installed-test redis-server
	rm -rf test-output/faults
	$(PY) -m pytest -p no:cacheprovider -q tests/faults || status=1; \
	$(if $(RETHINKDB),CHANGEFLOW_TEST_RETHINKDB_BIN=$(RETHINKDB_BIN) $(PY) -m pytest -p no:cacheprovider -q tests/faults || status=1;) \
	$(PY) -m tests.faults.report --write; exit $${status:-0}

rethinkdb-bin:
	@[ -n "$(RETHINKDB)" ] || { echo "no RethinkDB server binary: run with RETHINKDB=/path/to/rethinkdb" >&2; exit 2; }
	@[ -x "$(RETHINKDB_BIN)" ] || { echo "RETHINKDB=$(RETHINKDB): not an executable file" >&2; exit 2; }

# The whole suite against a real RethinkDB the tests start themselves (fault tests included).
test-rethinkdb: $(VENV)/.installed-test redis-server chromium rethinkdb-bin
	CHANGEFLOW_TEST_RETHINKDB_BIN=$(RETHINKDB_BIN) $(PY) -m pytest -p no:cacheprovider

# RethinkDB's own polyglot ReQL tests against the ReQL test server (issue 19): the
# suite at ../shared/reql-polyglot when it is there (REQL_POLYGLOT=/path/to/run
# overrides); ARGS go to its `run` (files, --out DIR). Not part of `make test`.
REQL_POLYGLOT ?= $(wildcard ../shared/reql-polyglot/run)
test-reql-suite: $(VENV)/.installed-test
	@[ -n "$(REQL_POLYGLOT)" ] || { echo "no polyglot suite here: give REQL_POLYGLOT=/path/to/reql-polyglot/run" >&2; exit 2; }
	$(REQL_POLYGLOT) --fake --python $(PY) $(ARGS)

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# RETHINKDB=/path/to/rethinkdb given to make (or in the environment): against that server.
bench: $(VENV)/.installed-bench redis-server
	$(if $(filter command line environment,$(origin RETHINKDB)),CHANGEFLOW_TEST_RETHINKDB_BIN=$(RETHINKDB_BIN)) $(PY) -m bench

bench-rethinkdb: $(VENV)/.installed-bench redis-server rethinkdb-bin
	CHANGEFLOW_TEST_RETHINKDB_BIN=$(RETHINKDB_BIN) $(PY) -m bench

demo: $(VENV)/.installed-demo redis-server
	$(PY) demo/run.py
