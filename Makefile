# Two commands: `make run` starts privpoll on this machine, `make test` runs every test.
# Both install what they need into .venv first (PyPI wheels only; see README).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export PRIVPOLL_CACHE ?= $(HOME)/.cache/privpoll
export PIP_CACHE_DIR  ?= $(PRIVPOLL_CACHE)/pip

.PHONY: install run test lint typecheck unit integration chaos soak bench bench-big privacy-report chromium openssl clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "privpoll needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	$(BIN)/privpoll up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

# The fault suite at full size (make test runs it small); figures in test-artifacts/chaos.json.
chaos: install
	PRIVPOLL_CHAOS_VOTES=2000 $(BIN)/pytest -q tests/integration/test_chaos.py tests/integration/test_faults.py

# Ten minutes of votes at half the benchmarked rate (bench/soak.py): memory of every process
# flat within 10%, no vote lost. Never part of make test; figures in bench/results/soak-*.json.
soak: install
	$(BIN)/python -m bench.soak

# Benchmarks, never part of make test: ratios against baselines measured in the same run
# (five to ten minutes; BENCH_ARGS="--seconds 3" or "--quick" for a shorter look). Figures in
# bench/results/*.json, docs/benchmarks.md and docs/benchmarks.png.
BENCH_ARGS ?=
bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || \
		{ echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[report]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# One poll of a million voters end to end (creation from a voter file, invitations, votes,
# re-mix, results, peak memory; about ten minutes): bench/results/big-*.json and its section of
# docs/benchmarks.md. BIG_ARGS="--voters 100000" for a shorter look.
BIG_ARGS ?=
bench-big: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || \
		{ echo "bench-big needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[report]'
	$(BIN)/python -m bench.big $(BIG_ARGS)

# What a database thief learns from privpoll and from two common designs, measured in one run
# (about two minutes): docs/privacy.json, docs/privacy.png and the table in docs/privacy.md.
privacy-report: install
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[report]'
	$(BIN)/python -m bench.privacy_report

# The browser tests (tests/e2e) drive Debian's Chromium; Playwright never downloads one.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "The browser tests need Chromium: run 'sudo apt-get install chromium' (they skip without it)"; \
		fi

# The TLS test of the sinks' NATS connection and the Kubernetes control plane make keys with it.
openssl:
	@command -v openssl >/dev/null || \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; \
		else \
			echo "Some tests need openssl: run 'sudo apt-get install openssl' (they skip without it)"; \
		fi

test: lint typecheck chromium openssl
	$(BIN)/pytest -q -ra tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
