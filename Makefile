# The README's two commands, `make demo` and `make test`: both set up everything on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LW := $(BIN)/lengthwise
DEMO_PORT ?= 8000
DEMO_OUT ?= runs/demo
DEMO_MAX_TOKENS ?= 64
DEMO_MINUTES ?= 15

.PHONY: env engine-setup prometheus redis test unit demo

$(BIN)/python:
	@echo "==> Creating the project's environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> Installing lengthwise and its test dependencies into $(VENV)"
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	@touch $@

env: $(VENV)/.installed

# vLLM in its own venv and the converted model, under ~/.cache/lengthwise (LENGTHWISE_CACHE): once per machine.
engine-setup: env
	@echo "==> Setting up the embedded engine (first time: vLLM ~5 min, model ~2-4 min; then instant)"
	$(LW) engine setup

# Prometheus (Debian's package), for the test in which a real Prometheus scrapes the gateway: once per
# machine, as root. Where it cannot be installed (no apt-get, not root) that test is skipped and says why.
# The test runs its own Prometheus on a free port; the package's own service is left as Debian sets it up.
prometheus:
	@command -v prometheus >/dev/null || { echo "==> Installing Prometheus (Debian's package; once per machine)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus >/dev/null; } || echo "==> Could not install prometheus: its test will be skipped"; }

# Debian's redis-server, which the scale-out tests start on free ports of their own (nothing is left running
# by the tests; the package may start a system service of its own where systemd runs).
redis:
	@command -v redis-server >/dev/null || { \
		echo "==> Installing redis-server (Debian package)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server; }

# Unit and integration tests; the integration session starts (and stops) its own engine on a free port.
test: engine-setup prometheus redis
	$(BIN)/pytest -ra --durations=10

# Only the fast unit tests: no engine.
unit: env
	$(BIN)/pytest -ra -m "not integration"

# FCFS vs LLM-guided (the gateway's default predictor) vs oracle on real ShareGPT prompts, on the embedded
# engine (started here and stopped at the end unless it was already up): a burst (every prompt at once) and
# one round of Poisson arrivals at 90% of the measured capacity, the prompt count (at most 60) fitted to
# DEMO_MINUTES from the engine's measured speed: tables + runs/demo/<scenario>/report.md.
demo: engine-setup
	$(LW) bench compare --n 60 --max-tokens $(DEMO_MAX_TOKENS) --arrivals burst --arrivals poisson --load 0.9 \
		--rounds 1 --budget-minutes $(DEMO_MINUTES) --engine-port $(DEMO_PORT) --max-num-seqs 2 --out $(DEMO_OUT)
