"""Helpers for the service tests (test_studies.py, test_worker.py): a dataset, studies, worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from coordinator.commands.studies import run_create_studies
from coordinator.studies.planning import MatrixRequest, PlannedStudy

REPO = Path(__file__).resolve().parent.parent

# Short liveness settings so lost trials are noticed in seconds, not minutes.
FAST = ["--heartbeat-interval", "1", "--grace-period", "3"]
# For tests that lose no worker: a grace period no busy CI machine can starve a heartbeat thread of.
CALM = ["--heartbeat-interval", "1", "--grace-period", "20"]


def make_dataset(url: str, days: int = 2500, seed: int = 0, symbol: str = "SYN") -> str:
    """A seeded synthetic market built into a dataset; returns 'name:version'."""
    from coordinator.data import registry
    from coordinator.data.synth import synthetic_series
    from coordinator.store import engines

    engine = engines.make_engine(url)
    try:
        registry.register_series(engine, symbol, synthetic_series(days, seed), source=f"synth seed={seed}")
        dataset, _ = registry.build_dataset(engine, symbol)
    finally:
        engine.dispose()
    return f"{dataset.name}:{dataset.version}"


def create(url: str, **request: object) -> list[PlannedStudy]:
    return run_create_studies(url, MatrixRequest(**request), with_baselines=False)  # type: ignore[arg-type]


def start_worker(url: str, *args: str, log_dir: Path | None = None) -> subprocess.Popen[str]:
    """`worker --database-url URL ARGS...` as a real process (output to a file when log_dir is given)."""
    out = open(log_dir / f"worker-{time.monotonic_ns()}.log", "w") if log_dir else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "--database-url", url, *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def rows(engine: sa.Engine, sql: str, **params: object) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def state_counts(engine: sa.Engine) -> dict[tuple[str, str], int]:
    """(study name, Optuna state) -> number of trials."""
    found = rows(
        engine,
        "SELECT s.study_name, t.state::text AS state, count(*) AS n FROM trials t "
        "JOIN studies s ON s.study_id = t.study_id GROUP BY 1, 2",
    )
    return {(r["study_name"], r["state"]): r["n"] for r in found}
