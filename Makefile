# waveshield: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install; override for another platform, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo test bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/waveshield demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_dwt.py && $(PY) benchmarks/bench_deepfool.py

gpu-check: $(STAMP)
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) waveshield-out .pytest_cache
