# Two entry points (see README.md): `make test` and `make bench`. Each creates the
# virtual environment it needs, installs padkern's dependencies and builds the
# extensions (CUDA too whenever torch is a CUDA build and nvcc is found).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# A CUDA build of torch so the CUDA extension compiles here even without a GPU.
TORCH_SPEC ?= torch==2.14.1
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export MAX_JOBS ?= 2

# The second supported setup: a CPU-only torch with the newest triton (what
# `pip install torch==2.13.0 triton` gives on a machine without CUDA). It lives in its own
# directory, a copy of the sources with its own venv and in-place extension, so it never
# touches the main build's .so files.
FALLBACK_DIR ?= build/cpu-fallback
FALLBACK_TORCH_SPEC ?= torch==2.13.0
FALLBACK_SRC := $(FALLBACK_DIR)/src
FALLBACK_PY := $(CURDIR)/$(FALLBACK_DIR)/.venv/bin/python

# The third supported setup, the lowest of the supported range and what the GPU machine runs:
# torch 2.11.0 (a CUDA 13.0 build) with triton 3.6.0, whose interpreter needs numpy < 2.4.
# Laid out as the fallback is; its extension is CPU-only (the main setup compiles the CUDA
# one), and it runs a selection (GPU_STACK_TESTS) so CI stays within its time.
GPU_STACK_DIR ?= build/gpu-stack
GPU_STACK_SPEC ?= torch==2.11.0 triton==3.6.0 numpy<2.4
GPU_STACK_SRC := $(GPU_STACK_DIR)/src
GPU_STACK_PY := $(CURDIR)/$(GPU_STACK_DIR)/.venv/bin/python
# Registration and compile, the Triton backend (kernels under the interpreter, compiled for
# sm_80/sm_90 by triton 3.6's own compiler, traced by torch 2.11's compile as on a GPU), the
# modules, Ragged and torch.nested.
GPU_STACK_TESTS ?= tests/test_registration.py tests/test_compile_batch.py tests/test_triton_guards.py \
	tests/test_triton_compiles.py tests/test_triton_traces.py tests/test_rnn_modules.py tests/test_lstm_projections.py \
	tests/test_ragged_api.py tests/test_ragged_movement.py tests/test_nested.py
# The recurrences' Triton kernels run in the modules' tests above; their op-level tests would
# add two minutes.
GPU_STACK_TRITON_TESTS ?= tests/test_linear.py tests/test_segment.py tests/test_padding.py

.PHONY: test test-main test-cpu-fallback test-gpu-stack build build-cpu-fallback build-gpu-stack bench clean

# The sources as they are in the work tree (tracked and new files), mirrored into $(1): files
# gone from the tree go from the copy too. The extension is built in place there with
# build_ext, not pip (whose editable build starts from scratch each time): tar keeps
# modification times and the copy's build/ stays, so ninja recompiles changed files only.
define mirror_sources
	mkdir -p $(1)
	find $(1) -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(1)
endef

# A second setup's copy of the sources in $(1), its CPU extension built with python $(2) and
# announced as setup $(3).
define build_copy
	$(call mirror_sources,$(1))
	cd $(1) && PADKERN_NO_CUDA=1 $(2) setup.py -q build_ext --inplace
	cd $(1) && $(2) -c "import torch, triton, padkern._extension as e; \
		print('padkern $(3) built: torch', torch.__version__, '| triton', triton.__version__, '| cpu', e.CPU_MISSING or 'ok')"
endef

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" triton ninja pybind11 setuptools wheel pytest hypothesis numpy matplotlib
	touch $@

build: $(VENV)/.deps
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import padkern._extension as e; print('padkern built: cpu', e.CPU_MISSING or 'ok', '| cuda', e.CUDA_MISSING or 'ok')"

# The three supported setups.
test: test-main test-cpu-fallback test-gpu-stack

test-main: build
	$(PY) -m pytest -q tests

$(FALLBACK_DIR)/.venv/.deps: Makefile
	rm -rf $(FALLBACK_DIR)/.venv
	$(PYTHON) -m venv $(FALLBACK_DIR)/.venv
	$(FALLBACK_PY) -m pip install -q --upgrade pip
	$(FALLBACK_PY) -m pip install -q "$(FALLBACK_TORCH_SPEC)" triton ninja pybind11 setuptools wheel pytest hypothesis numpy
	$(FALLBACK_PY) -c "import torch, sys; sys.exit(torch.version.cuda and \
		'$(FALLBACK_TORCH_SPEC) installed a CUDA build of torch; this setup needs a CPU-only one')"
	touch $@

build-cpu-fallback: $(FALLBACK_DIR)/.venv/.deps
	$(call build_copy,$(FALLBACK_SRC),$(FALLBACK_PY),cpu-fallback)

# padkern is imported from the copy (PYTHONPATH, for subprocesses too). The CUDA-extension
# tests skip there by themselves.
test-cpu-fallback: build-cpu-fallback
	cd $(FALLBACK_SRC) && PYTHONPATH=$$PWD $(FALLBACK_PY) -m pytest -q tests

$(GPU_STACK_DIR)/.venv/.deps: Makefile
	rm -rf $(GPU_STACK_DIR)/.venv
	$(PYTHON) -m venv $(GPU_STACK_DIR)/.venv
	$(GPU_STACK_PY) -m pip install -q --upgrade pip
	$(GPU_STACK_PY) -m pip install -q $(foreach spec,$(GPU_STACK_SPEC),"$(spec)") ninja pybind11 setuptools wheel pytest hypothesis
	touch $@

build-gpu-stack: $(GPU_STACK_DIR)/.venv/.deps
	$(call build_copy,$(GPU_STACK_SRC),$(GPU_STACK_PY),gpu-stack)

# The selection above whole, and the Triton backend's tests of the ops (the cpu backend's
# and the reference's run in the other two setups).
test-gpu-stack: build-gpu-stack
	cd $(GPU_STACK_SRC) && PYTHONPATH=$$PWD $(GPU_STACK_PY) -m pytest -q $(GPU_STACK_TESTS)
	cd $(GPU_STACK_SRC) && PYTHONPATH=$$PWD $(GPU_STACK_PY) -m pytest -q -k triton $(GPU_STACK_TRITON_TESTS)

bench: build
	$(PY) -m benchmarks.run

clean:
	rm -rf build padkern/*.so *.egg-info
