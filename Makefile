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

.PHONY: test test-main test-cpu-fallback build build-cpu-fallback bench clean

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" triton ninja pybind11 setuptools wheel pytest hypothesis numpy matplotlib
	touch $@

build: $(VENV)/.deps
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import padkern._extension as e; print('padkern built: cpu', e.CPU_MISSING or 'ok', '| cuda', e.CUDA_MISSING or 'ok')"

# Both supported setups.
test: test-main test-cpu-fallback

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

# The sources as they are in the work tree (tracked and new files), mirrored: files gone
# from the tree go from the copy too. The extension is built in place there with
# build_ext, not pip (whose editable build starts from scratch each time): tar keeps
# modification times and the copy's build/ stays, so ninja recompiles changed files only.
build-cpu-fallback: $(FALLBACK_DIR)/.venv/.deps
	mkdir -p $(FALLBACK_SRC)
	find $(FALLBACK_SRC) -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(FALLBACK_SRC)
	cd $(FALLBACK_SRC) && PADKERN_NO_CUDA=1 $(FALLBACK_PY) setup.py -q build_ext --inplace
	cd $(FALLBACK_SRC) && $(FALLBACK_PY) -c "import torch, triton, padkern._extension as e; \
		print('padkern cpu-fallback built: torch', torch.__version__, '| triton', triton.__version__, '| cpu', e.CPU_MISSING or 'ok')"

# padkern is imported from the copy (PYTHONPATH, for subprocesses too). The CUDA-extension
# tests skip there by themselves.
test-cpu-fallback: build-cpu-fallback
	cd $(FALLBACK_SRC) && PYTHONPATH=$$PWD $(FALLBACK_PY) -m pytest -q tests

bench: build
	$(PY) -m benchmarks.run

clean:
	rm -rf build padkern/*.so *.egg-info
