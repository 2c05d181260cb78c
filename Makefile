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

# Workers as a Slurm job array for real on this machine: slurm-wlm + munge installed when missing,
# single-node slurmctld/slurmd, a private TLS + password PostgreSQL, 3 workers (one scancelled, one
# requeued mid-trial), checks through the SQL views. Needs root; ~3 min. Trials sleep 20 s (same claim,
# heartbeat, SIGTERM and record path); `make e2e-slurm E2E_SLURM_ARGS=` trains for real (slow on 2 cores).
E2E_SLURM_ARGS ?= --synthetic 20
.PHONY: e2e-slurm
e2e-slurm: venv
	SHARED_DATA=$(SHARED_DATA) scripts/e2e_slurm.sh $(E2E_SLURM_ARGS)

# 200 synthetic workers through PgBouncer (transaction pooling) and straight to PostgreSQL, on a
# private server and pooler of its own (Debian's pgbouncer); ~10 min.
.PHONY: bench-pgbouncer
bench-pgbouncer: venv
	$(PY) bench/pgbouncer.py

# The service's benchmarks on the local PostgreSQL (127.0.0.1:5432; BENCH_ADMIN_URL to change it):
# SQL views at 100k trials, then the worker fleet (--quick). `bench-full`: 1-64 workers, 100k stored.
.PHONY: bench-service bench-full
bench-service: venv
	$(PY) bench/views.py
	$(PY) bench/coordination.py --quick

bench-full: venv
	$(PY) bench/views.py
	$(PY) bench/coordination.py --full --private-server

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

lint: venv
	$(BIN)/ruff check .
