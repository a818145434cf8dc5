# Two commands on a fresh machine (Python 3.11 + make): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PORT ?= 8710
# Bytecode for our own sources, made ahead: where PYTHONDONTWRITEBYTECODE is set (CI here), every `callgrid`
# process compiled them all again at start, 0.2 s of its cold start; the suite starts hundreds. Only files
# changed since are compiled again; a stale file is never used (Python checks the source's time).
COMPILE := $(BIN)/python -m compileall -q src

.PHONY: run test test-postgresql lint bench clean

$(STAMP): pyproject.toml
	@# Text-to-speech is Debian's espeak-ng (no wheel carries it): installed here when we may, else named.
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; } \
		|| echo "note: install espeak-ng (apt-get install espeak-ng) for spoken prompts; the tests need it"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Start callgrid (https://localhost:$(PORT)) and the router with a demo number; state in ./.callgrid
run: $(STAMP)
	@$(COMPILE)
	$(BIN)/callgrid demo --port $(PORT) --data-dir .callgrid

## The whole test suite (a real server, the official SDKs): most of it on $(JOBS) processes, then the tests
## that hear or speak in real time on their own, so that no other test steals their audio's time.
## One process more than the machine has cores (tests wait on servers and peers): at least 3, at most 6 (each
## starts servers with their own PostgreSQL connections; the default server allows 100).
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -lt 2 ] && n=2; n=$$((n + 1)); [ $$n -gt 6 ] && n=6; echo $$n)
test: $(STAMP)
	@$(COMPILE)
	$(BIN)/pytest -q -n $(JOBS) --dist loadfile -m "not realtime"
	$(BIN)/pytest -q -m realtime

## The tests again with every server they start on PostgreSQL (CALLGRID_TEST_POSTGRES_URL, a schema each)
POSTGRES_TESTS ?= tests
## Of the real-time tests, those whose subject the store carries (delivery under hanging webhooks, hold,
## recordings) run on PostgreSQL too. The others (SIP peers, WebSocket streams, speech, the browser's
## softphone) hear and speak through the media plane, which keeps nothing in the store beyond the call
## set-up the pass before them covers on PostgreSQL; they run once, in `make test`.
POSTGRES_REALTIME_TESTS ?= tests/eventgrid tests/platform tests/media/test_plane.py
test-postgresql: $(STAMP)
	@$(COMPILE)
	@# Tests marked store_independent (no server of the suite's, or stores they name themselves) run the same on either
	@# store: `make test` runs them.
	CALLGRID_TEST_STORE=postgresql $(BIN)/pytest -q -n $(JOBS) --dist loadfile -m "not realtime and not store_independent" $(POSTGRES_TESTS)
	@# Exit status 5 is "no test collected": a chosen subset may hold no real-time test.
	CALLGRID_TEST_STORE=postgresql $(BIN)/pytest -q -m "realtime and not store_independent" $(POSTGRES_REALTIME_TESTS) || [ $$? = 5 ]

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## Every benchmark in benchmarks/, quick modes, in under ten minutes: writes BENCHMARKS.md's summary table
## and benchmarks/results/ (the JSON, and a plot of latency against offered load)
bench: $(BENCH_STAMP)
	@$(COMPILE)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .callgrid .pytest_cache .mypy_cache .ruff_cache
