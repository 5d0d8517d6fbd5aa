# flowmap-oracle: `make report` writes the PDF report, `make test` runs the test suite.
# Both create (once) and reuse a virtual environment in $(VENV) and install what they need.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPORT ?= build/flowmap-oracle-report.pdf
PYTEST_ARGS ?=

# A machine without a GPU gets the CPU build of torch, never a multi-GB CUDA download:
# torch is pinned, and pip also searches the PyTorch CPU index (and any local wheel cache
# configured for pip), whose `+cpu` build of that release ranks above PyPI's CUDA build of the
# same version. --retries 0: where that index is unreachable, retrying only costs time.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAVE_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_GPU),yes)
TORCH_INSTALL := torch==$(TORCH_VERSION)
else
TORCH_INSTALL := torch==$(TORCH_VERSION) --extra-index-url $(TORCH_CPU_INDEX) --retries 0
endif

.PHONY: install report test lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_INSTALL)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,report,jax,ot,dev,bench]"
	touch $(STAMP)

report: $(STAMP)
	$(VENV)/bin/flowmap-oracle report --out $(REPORT)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build .pytest_cache
