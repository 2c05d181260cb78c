# Everything from nothing: `make run` (the main job) and `make test` (the test suite).
# The CPU build of torch is pinned and installed first: a bare `torch` requirement would pull a
# multi-GB CUDA build. Override with `make TORCH_SPEC=... venv` (the Docker GPU image does).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SHARED_DATA ?= ../shared/data

.PHONY: venv run test test-slow lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[worker,dev]'
	touch $@

# The main job: the smoke matrix on the embedded PostgreSQL (real SPY from $(SHARED_DATA) when
# present), two workers, live progress, then the leaderboard and report/index.html.
run: venv
	$(BIN)/coordinator local --workers 2 --preset smoke

test: venv
	$(PY) -m pytest -q

# End-to-end checks too slow for the default run.
test-slow: venv
	$(PY) -m pytest -q -m slow

# The compose stack for real on this machine: Docker + Compose installed/started when missing, local
# images, 4 workers (one SIGKILLed), checks through the SQL views, teardown. Needs root; minutes.
.PHONY: e2e-compose
e2e-compose: venv
	SHARED_DATA=$(SHARED_DATA) scripts/e2e_compose.sh

# The service's benchmarks on the local PostgreSQL (127.0.0.1:5432; BENCH_ADMIN_URL to change it):
# SQL views at 100k trials, then the worker fleet beside plain Optuna. `bench-full`: 1-8, then 32 and 64 workers.
.PHONY: bench-service bench-full
bench-service: venv
	$(PY) bench/views.py
	$(PY) bench/coordination.py --workers 1,4

bench-full: venv
	$(PY) bench/views.py
	$(PY) bench/coordination.py --big --private-server

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

lint: venv
	$(BIN)/ruff check .
