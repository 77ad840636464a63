# The two commands: `make run` starts the platform, `make test` passes the tests.
# Both bootstrap .venv from nothing; torch is pinned and installed first so pip never pulls CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: run test test-fast test-slow lint bench venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/genqueue up

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not faults and not browser"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or faults"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks.generation
	$(PY) -m benchmarks.queue
	$(PY) -m benchmarks.train_lm
	$(PY) -m benchmarks.train_gan

clean:
	rm -rf $(VENV) var test-artifacts
