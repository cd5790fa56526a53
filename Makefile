# Two entry points for a fresh machine: `make demo` (the main job on MovieLens-100K)
# and `make test` (the test suite). Both install what they need into .venv and are
# safe to re-run: every step is guarded by a stamp file or an existence check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
DATA_DIR := .cache/ml-100k
PYTRITON := nvidia-pytriton==0.7.0

.PHONY: install system-deps data demo test lint clean

install: $(STAMP)

# The 3.11 Python-backend stub of the bundled Triton links the system's libpython3.11.
system-deps:
	@if ! ldconfig -p | grep -q 'libpython3.11.so.1.0'; then \
		echo "installing Debian's libpython3.11 (needed by Triton's Python-backend stub)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11; \
	fi

$(STAMP): requirements.txt pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps $(PYTRITON)
	$(PIP) install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

data: install
	$(PY) -m toolkit data fetch --dest $(DATA_DIR)

demo: data
	$(PY) -m toolkit demo --data-dir $(DATA_DIR)

test: data
	$(PY) -m pytest

# Style, and the architecture: .importlinter keeps the stages in data-flow order.
lint: install
	$(VENV)/bin/ruff check toolkit tests
	$(VENV)/bin/ruff format --check toolkit tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf artifacts model_repository/*/
