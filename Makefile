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

.PHONY: test bench build gpu-check clean

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" triton ninja pybind11 setuptools wheel pytest hypothesis numpy matplotlib
	touch $@

build: $(VENV)/.deps
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import padkern._extension as e; print('padkern built: cpu', e.CPU_MISSING or 'ok', '| cuda', e.CUDA_MISSING or 'ok')"

test: build
	$(PY) -m pytest -q tests

bench: build
	$(PY) -m benchmarks.run

clean:
	rm -rf build padkern/*.so *.egg-info
