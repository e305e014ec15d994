# qproxy — every target sets itself up on a fresh Debian machine (as root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BSTAMP := $(VENV)/.installed-bench
DEBS   := qemu-guest-agent socat

.PHONY: all setup debs test lint demo bench clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; \
	  [ "$$(id -u)" = 0 ] || { echo "run as root (or install python3-venv)" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -c "import ijson, sys; b = ijson.get_backend('yajl2_c'); print('ijson backend:', b.backend_name)"
	touch $(STAMP)

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or install:$$missing)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: $(STAMP) debs

$(BSTAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BSTAMP)

lint: setup
	$(VENV)/bin/ruff check qproxy tests
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

demo: setup
	$(PY) -m qproxy demo

bench: setup $(BSTAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
