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
# Helm's Go library for Python (tritonrec k8s render, the chart tests): it declares Python >= 3.12
# but runs on 3.11, so it gets its own pip line with --ignore-requires-python.
HELM_SDKPY := helm-sdkpy==0.1.32
# perf_analyzer: the PyPI perf-analyzer wheels need glibc 2.38 (Debian 12 has 2.36), so the binary
# comes out of the manylinux1 tritonclient 2.50.0 wheel (never installed, only unpacked) and runs with
# Debian's libb64 and the libcudart.so.12 of nvidia-cuda-runtime-cu12 (toolkit.perf puts it on
# LD_LIBRARY_PATH). Skipped when `perf_analyzer` is on PATH (the Triton SDK container). The stamp holds
# the wheel it came from (toolkit.perf reports it as the binary's source).
PERF_ANALYZER_WHEEL := tritonclient==2.50.0
PERF_ANALYZER_MEMBER := tritonclient-2.50.0.data/data/bin/perf_analyzer
CUDA_RUNTIME := nvidia-cuda-runtime-cu12==12.9.79
PERF_DIR := $(VENV)/perf_analyzer
PERF_STAMP := $(PERF_DIR)/.installed-tritonclient-2.50.0
PERF_ON_PATH := $(shell command -v perf_analyzer 2>/dev/null)

.PHONY: install system-deps perf-tools gpu-deps data demo test test-deps lint clean

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
	$(PIP) install -q --ignore-requires-python $(HELM_SDKPY)
	$(PIP) install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

perf-tools: $(if $(PERF_ON_PATH),,$(PERF_STAMP))

$(PERF_STAMP): | $(STAMP)
	@if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then \
		echo "installing Debian's libb64-0d (needed by perf_analyzer)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d; \
	fi
	@echo "installing perf_analyzer from $(PERF_ANALYZER_WHEEL) into $(PERF_DIR)/bin"
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PIP) download -q --no-deps --dest "$$tmp" $(PERF_ANALYZER_WHEEL); \
	$(PY) -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
		"$$(ls "$$tmp"/tritonclient-*.whl)" $(PERF_ANALYZER_MEMBER) "$$tmp/perf_analyzer"; \
	chmod +x "$$tmp/perf_analyzer"; mkdir -p $(PERF_DIR)/bin; mv -f "$$tmp/perf_analyzer" $(PERF_DIR)/bin/perf_analyzer
	$(PIP) install -q $(CUDA_RUNTIME)
	rm -f $(PERF_DIR)/.installed-* && echo "$(PERF_ANALYZER_WHEEL)" > $@

# TensorRT and Polygraphy for the tensorrt variants (GPU machines only; never needed by demo/test).
gpu-deps: install
	$(PIP) install -q -r requirements-gpu.txt

data: install
	$(PY) -m toolkit data fetch --dest $(DATA_DIR)

demo: data perf-tools
	$(PY) -m toolkit demo --data-dir $(DATA_DIR)

# QEMU's user-mode emulator lets the tests run ONNX Runtime on an emulated AVX2-only CPU (INT8 kernels differ there).
test-deps:
	@if [ "$$(uname -m)" = x86_64 ] && ! command -v qemu-x86_64 >/dev/null; then \
		echo "installing Debian's qemu-user (the INT8 tests emulate an AVX2-only CPU with it)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; \
	fi
	@# Debian's Prometheus binary, only unpacked from its .deb (installing the package would start a
	@# service), for the tests of the autoscaler's Prometheus-query source; `prometheus` on PATH wins.
	@if ! command -v prometheus >/dev/null && [ ! -x $(VENV)/prometheus/bin/prometheus ]; then \
		echo "unpacking Debian's prometheus into $(VENV)/prometheus/bin (tests of the Prometheus-query source)"; \
		set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
		(cd "$$tmp" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; }); \
		dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/root"; mkdir -p $(VENV)/prometheus/bin; \
		mv -f "$$tmp/root/usr/bin/prometheus" $(VENV)/prometheus/bin/prometheus; \
	fi

test: data perf-tools test-deps
	$(PY) -m pytest

# Style, and the architecture: .importlinter keeps the stages in data-flow order.
lint: install
	$(VENV)/bin/ruff check toolkit tests
	$(VENV)/bin/ruff format --check toolkit tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf artifacts model_repository/*/
