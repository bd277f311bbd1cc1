# Everything a fresh Debian machine with Python 3.11+ and make needs:
#   make demo   - replay a recorded crash through the engine (bundled data)
#   make test   - ruff, mypy and the whole test suite (starts its own brokers)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the tests drive for real (command -> package): an MQTT broker,
# Prometheus (promtool, server), Alertmanager (amtool), a browser for the replay
# report, kubectl (kustomize) and systemd-analyze for the deploy files.
DEB_TOOLS := mosquitto:mosquitto promtool:prometheus amtool:prometheus-alertmanager \
             chromium:chromium kubectl:kubernetes-client systemd-analyze:systemd

.PHONY: demo test lint typecheck unit bench system-deps clean

# Debian's python3 has no ensurepip (so `python3 -m venv` fails) until the
# python3.X-venv package of that very interpreter is installed: check before
# creating the virtualenv, install it as root, otherwise say exactly what to run.
VENV_PKG = $$($(PYTHON) -c 'import sys; print(f"python3.{sys.version_info[1]}-venv")')

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python 3.11 or newer is required ($(PYTHON) is older)"; exit 1; }
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  pkg=$(VENV_PKG); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian package $$pkg (python3 -m venv needs it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null || exit 1; \
	  else \
	    echo "error: $(PYTHON) cannot create virtualenvs (no ensurepip)"; \
	    echo "       run: sudo apt-get install -y $$pkg"; exit 1; \
	  fi; \
	fi
	@[ -x $(BIN)/pip ] || rm -rf $(VENV)  # a venv left half-made by an earlier failure
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

system-deps:
	@missing=""; \
	for pair in $(DEB_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "error: missing Debian packages:$$missing"; \
	    echo "       run: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/monitor demo

lint: $(STAMP)
	$(BIN)/ruff check monitor tests
	$(BIN)/ruff format --check monitor tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/monitor bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
