# `make demo` trains on the bundled sample; `make test` runs the test suite; `make docs` builds the site.
# Each creates .venv and installs the package into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test test-slow test-backends test-compat lint docs benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# torchjd (the reference of the aggregation tests) and the solvers its CAGrad, Nash-MTL
# and UPGrad need, installed after torch so that pip keeps the pinned torch.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,tfds,torch,jax,hub]"
	$(BIN)/pip install -q torchjd==0.18.0 cvxpy==1.9.3 clarabel==0.11.1 ecos==2.0.14 quadprog==0.1.14 qpsolvers==4.13.0
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python experiments/train_person.py

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

# The documentation site (mkdocs.yml): --strict fails on a broken link, page or API reference.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m slow

# The backend-neutral aggregation against torchjd on JAX (in float64) and PyTorch.
test-backends: $(VENV)/.installed-dev
	KERAS_BACKEND=jax JAX_ENABLE_X64=1 $(BIN)/python -m pytest tests/test_aggregators_torchjd.py
	KERAS_BACKEND=torch $(BIN)/python -m pytest tests/test_aggregators_torchjd.py

# The smoke suite (tests/compat/smoke.py: train with DWA and with UPGrad, save, load in a
# fresh process, export ONNX) in one environment at the lowest keras and tensorflow that
# setup.cfg allows and in one at the newest releases its ranges allow.
test-compat:
	PYTHON=$(PYTHON) tests/compat/run.sh .venv-compat-low lowest
	PYTHON=$(PYTHON) tests/compat/run.sh .venv-compat-new newest

benchmarks: $(VENV)/.installed-dev
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .venv-compat-low .venv-compat-new build site *.egg-info .pytest_cache
