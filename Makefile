# The two commands: `make run` starts the platform, `make test` passes the tests.
# Both bootstrap .venv from nothing; torch is pinned and installed first so pip never pulls CUDA wheels.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: run test test-fast test-slow lint fmt bench venv clean browser-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/genqueue up

test: $(STAMP) browser-deps
	$(PY) -m pytest -q

# Browser tests drive Debian's Chromium (never a downloaded browser). As root, install it when missing; otherwise
# the browser tests skip and say why.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver) \
		|| echo "could not install chromium: the browser tests will be skipped"; \
	else echo "no /usr/bin/chromium and not root: the browser tests will be skipped"; fi

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not faults and not browser"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or faults"

# What CI checks before the tests: ruff's lint rules and its formatting. `make fmt` fixes what it can of both.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks.generation
	$(PY) -m benchmarks.queue_overhead
	$(PY) -m benchmarks.small_jobs
	$(PY) -m benchmarks.train_lm
	$(PY) -m benchmarks.train_gan

clean:
	rm -rf $(VENV) var test-artifacts
