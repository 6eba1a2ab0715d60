# Two commands: `make run` starts privpoll on this machine, `make test` runs every test.
# Both install what they need into .venv first (PyPI wheels only; see README).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export PRIVPOLL_CACHE ?= $(HOME)/.cache/privpoll
export PIP_CACHE_DIR  ?= $(PRIVPOLL_CACHE)/pip

.PHONY: install run test lint typecheck unit integration chaos soak bench bench-big privacy-report mutate chromium \
	openssl podman image images containers tools cluster-deps e2e-cluster clean

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
# Besides single-server faults: a three-node NATS cluster losing its leaders, full disks,
# 500 slow clients and 1,000 voters behind one address (-s: each test prints its counts).
CHAOS_TESTS := test_chaos.py test_faults.py test_cluster.py test_disk_full.py test_slow_clients.py \
	test_one_address.py
chaos: install
	PRIVPOLL_CHAOS_VOTES=2000 $(BIN)/pytest -q -s $(addprefix tests/integration/,$(CHAOS_TESTS))

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

# Mutation testing (mutmut) of the modules that keep votes private and whole: tokens, noise,
# envelope, results, storage, remix, the sinks' mixing rule and the voter reservation, against
# the unit tests and the fast in-process integration tests (tests/mutation). Never part of
# make test: an hour or more on two cores. MUTANTS='privpoll.core.tokens.*' runs only some.
# Verdicts in docs/mutation.json; the survivors and why in docs/testing.md.
MUTANTS ?=
mutate: install
	$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[mutate]'
	nice $(BIN)/python -m tests.mutation $(MUTANTS)

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

# A one-node Kubernetes cluster from real components (tests/cluster/README.md): containerd,
# runc and the CNI plugins from Debian; kubelet, kube-proxy, the scheduler, the
# controller-manager and CoreDNS built from their Go modules (first time: about 20 minutes).
cluster-deps:
	@missing=""; for tool in containerd runc iptables conntrack; do \
		command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends containerd runc containernetworking-plugins iptables \
				conntrack >/dev/null; \
		else \
			echo "The cluster tests need:$$missing (sudo apt-get install containerd runc containernetworking-plugins iptables conntrack)"; \
		fi; \
	fi

# The user's story on that cluster, with the three images of this checkout (make images, then
# podman save into the cache; containerd imports them). Not part of make test: see
# tests/cluster/README.md for why.
ARCHIVES := $(PRIVPOLL_CACHE)/images/archives
e2e-cluster: install cluster-deps openssl images
	tests/controlplane/build.sh cluster >/dev/null
	mkdir -p $(ARCHIVES)
	for image in privpoll privpoll-nats privpoll-postgres; do \
		rm -f $(ARCHIVES)/$$image.tar; \
		podman save -o $(ARCHIVES)/$$image.tar localhost/$$image:dev || exit 1; \
	done
	PRIVPOLL_CLUSTER=1 PRIVPOLL_IMAGE_ARCHIVES="$(ARCHIVES)/privpoll.tar $(ARCHIVES)/privpoll-nats.tar $(ARCHIVES)/privpoll-postgres.tar" \
		$(BIN)/pytest -q -ra tests/cluster

# The image (Dockerfile) built with podman on a Debian base made here by debootstrap, so no
# container registry is needed: localhost/privpoll:dev. images/build.sh says how; podman's
# settings for this project are images/containers.conf, never the machine's own files.
export CONTAINERS_CONF ?= $(CURDIR)/images/containers.conf
IMAGE_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

podman:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				podman runc debootstrap >/dev/null; \
		else \
			echo "The image and its tests need podman, runc and debootstrap: run 'sudo apt-get install podman runc debootstrap' (the container tests skip without them)"; \
		fi

image: podman
	PYTHON=$(IMAGE_PYTHON) images/build.sh privpoll

# The image with the NATS and PostgreSQL images the container tests run beside it.
images: podman
	PYTHON=$(IMAGE_PYTHON) images/build.sh all

# The image run as the chart runs it, and the whole system voting in containers (tests/containers).
containers: install podman
	$(BIN)/pytest -q -ra tests/containers

# What the tests run that is built here: etcd, kube-apiserver and kubectl, helm (from their Go
# modules) and the three images. Built, or found in the cache, before pytest starts, so that
# no test's time limit has to cover a cold build.
tools: install openssl podman
	tests/controlplane/build.sh >/dev/null
	tests/helm/build.sh >/dev/null
	PYTHON=$(IMAGE_PYTHON) images/build.sh all

test: lint typecheck chromium tools
	$(BIN)/pytest -q -ra tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
