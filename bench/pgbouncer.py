"""Hundreds of workers on one PostgreSQL: the same fleet through PgBouncer and straight to the server.

    .venv/bin/python bench/pgbouncer.py                       # 200 workers, 60 s trials, 60 s windows
    .venv/bin/python bench/pgbouncer.py --workers 50 --window 30

Both fleets run in one invocation, one after the other, each on a fresh copy of the same database
(synthetic dataset, the default 12-study matrix, a target no one reaches), on a PRIVATE PostgreSQL
(initdb in a temp folder, max_connections raised for the direct fleet, password auth) with a private
PgBouncer (Debian's, transaction pooling) in front of it for the pooled fleet.

The workers are real `worker --synthetic S` processes (claim, sample, heartbeat, record, tell; a
sleep instead of training). 200 Python interpreters that each import the project would need ~30 GB;
so one launcher process imports it once and forks every worker from there (copy-on-write: they
share the imported code's memory), a few per second, then runs nothing else. Each worker is its own
process with its own connection pool, exactly as when started from the shell.

Per fleet, after every worker has finished a trial (start-up excluded), one measured window:
- server connections: the most backends on the database (sampled every 0.5 s);
- client connections: the most clients PgBouncer held (pooled fleet);
- trials/s: trials finished in the window; efficiency: trials/s / (workers / S);
- claim p50 / p95: per worker, previous trial's end -> next trial's start (claim, sample, record);
- errors: worker exits other than 0, and log lines with ERROR, a traceback or a lost connection;
- lost trials: attempts the reaper failed during the run for a heartbeat older than the grace period
  (a worker starved of CPU or of a server connection for that long), each re-run by the fleet;
- DB CPU s: CPU time PostgreSQL's own processes used in the window; trials per DB core-second is
  what one PostgreSQL core sustains with this fleet (the workers' CPU is not in it);
- memory: the fleet's proportional set size (PSS) at the end of the window, and the machine's least
  available memory during the run.
The run stops itself after --time-limit seconds, and on Ctrl-C, leaving nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from coordination import template_database  # noqa: E402

from coordinator.store import engines  # noqa: E402
from tests.private_postgres import Server, private_pgbouncer, private_postgres  # noqa: E402

STUDY_GLOB = "syn-*"
BAD_LOG_WORDS = ("ERROR", "Traceback", "connection lost", "prepared statement")
MIN_AVAILABLE_GB = 2.0  # stop starting workers below this much available memory


# --------------------------------------------------------------------------------------------------
# The launcher: imports once, forks the fleet (run as `bench/pgbouncer.py --launch ...`)


def launch(url: str, workers: int, sleep_s: float, stagger_s: float, log_dir: Path, prefix: str) -> None:
    """Fork `workers` worker processes from this one; forward SIGTERM; record every exit code."""
    import optuna  # noqa: F401  (everything a worker imports, once, before forking)
    import psycopg  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    import coordinator.studies.search_space  # noqa: F401
    import worker.cli
    import worker.loop  # noqa: F401

    gc.freeze()  # imported objects stay out of the children's garbage collections: fewer copied pages
    children: dict[int, str] = {}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        if stopping or available_gb() < MIN_AVAILABLE_GB:
            print(f"launcher: stopped starting at {i} workers ({available_gb():.1f} GB available)", flush=True)
            break
        worker_id = f"{prefix}-{i:03d}"
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            fd = os.open(log_dir / f"{worker_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = 1
            try:
                worker.cli.main(["--database-url", url, "--studies", STUDY_GLOB, "--synthetic", str(sleep_s),
                                 "--worker-id", worker_id, "--device", "cpu"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = worker_id
        time.sleep(stagger_s)
    codes: dict[str, int] = {}
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
    (log_dir / "exit_codes.json").write_text(json.dumps(codes))


# --------------------------------------------------------------------------------------------------
# The database every fleet starts from



# --------------------------------------------------------------------------------------------------
# Measuring


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def pss_gb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024**2


def child_pids(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (from /proc; gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def server_pids(server: Server) -> list[int]:
    """The private PostgreSQL's postmaster and its children (backends, background workers)."""
    postmaster = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
    return [postmaster, *child_pids(postmaster)]


def percentile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def as_utc(t: dt.datetime) -> dt.datetime:
    """Optuna's timestamps are naive local times (UTC here); the ledger's are aware."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


@dataclass
class Row:
    mode: str
    workers: int
    started: int
    sleep_s: float
    window_s: float = 0.0
    trials: int = 0
    claim_ms: list[float] = field(default_factory=list)
    server_connections: int = 0
    client_connections: int | None = None
    errors: int = 0
    db_cpu_s: float = 0.0  # CPU seconds PostgreSQL's processes used during the window
    lost: int = 0  # attempts the reaper failed for a missing heartbeat (or no progress) during the run
    error_samples: list[str] = field(default_factory=list)
    fleet_pss_gb: float = 0.0
    min_available_gb: float = 0.0
    load: float = 0.0
    note: str = ""

    @property
    def trials_per_s(self) -> float:
        return self.trials / self.window_s if self.window_s else 0.0


class Sampler:
    """Every 0.5 s: backends on the database, PgBouncer's clients, the machine's available memory."""

    def __init__(self, server: Server, database: str, bouncer_port: int | None) -> None:
        # Autocommit: inside one transaction pg_stat_activity would show its first snapshot forever.
        self.engine = sa.create_engine(server.url(), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
        self.server, self.database, self.bouncer_port = server, database, bouncer_port
        self.server_max = 0
        self.client_max = 0
        self.min_available = available_gb()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        count = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
        last_bouncer = 0.0
        with self.engine.connect() as conn:
            while not self.stop.wait(0.5):
                self.server_max = max(self.server_max, int(conn.execute(count, {"d": self.database}).scalar() or 0))
                self.min_available = min(self.min_available, available_gb())
                if self.bouncer_port is not None and time.monotonic() - last_bouncer > 2:
                    last_bouncer = time.monotonic()
                    with contextlib.suppress(subprocess.SubprocessError, ValueError):  # a slow answer on a loaded box: skip it
                        self.client_max = max(self.client_max, self.bouncer_clients())

    def bouncer_clients(self) -> int:
        """Clients PgBouncer holds for the database (its admin console speaks the simple protocol only: psql)."""
        out = subprocess.run(
            ["psql", f"host=127.0.0.1 port={self.bouncer_port} dbname=pgbouncer user=postgres", "-X", "-A", "-t", "-F", "|",
             "-c", "SHOW POOLS"],
            capture_output=True, text=True, timeout=20, env={**os.environ, "PGPASSWORD": self.server.password},
        ).stdout
        total = 0
        for line in out.splitlines():
            cols = line.split("|")
            if cols and cols[0] == self.database:
                total += sum(int(c) for c in cols[2:4])  # cl_active, cl_waiting
        return total

    def reset(self) -> None:
        self.server_max = self.client_max = 0

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self.engine.dispose()


FINISHED_SQL = sa.text(
    """
    SELECT worker, started_at, completed_at FROM trial_results
    WHERE study_name LIKE 'syn-%' AND state IN ('COMPLETE', 'PRUNED', 'FAIL') AND worker = ANY(:workers)
    ORDER BY worker, started_at
    """
)


LOST_SQL = sa.text(
    """
    SELECT count(*) FROM trial_results
    WHERE worker = ANY(:workers) AND state = 'FAIL' AND (reason LIKE 'lost%' OR reason LIKE 'stalled%')
    """
)


def measure_fleet(mode: str, server: Server, admin_url: str, template: str, args: argparse.Namespace, deadline: float) -> Row:
    row = Row(mode, args.workers, 0, args.sleep)
    with contextlib.ExitStack() as stack:
        direct_url = stack.enter_context(engines.scratch_database(admin_url, "bench_bouncer", template=template))
        database = str(sa.engine.make_url(direct_url).database)
        bouncer_port = None
        url = direct_url
        if mode == "pgbouncer":
            bouncer_port = stack.enter_context(private_pgbouncer(server, pool_size=args.pool_size, max_client_conn=10 * args.workers))
            url = server.url(database=database, port=bouncer_port)
        sampler = stack.enter_context(Sampler(server, database, bouncer_port))
        log_dir = Path(tempfile.mkdtemp(prefix=f"bench_pgbouncer_{mode}_"))
        ids = [f"{mode}-{i:03d}" for i in range(args.workers)]
        launcher = subprocess.Popen(
            [sys.executable, __file__, "--launch", url, str(args.workers), str(args.sleep), str(args.stagger), str(log_dir), mode],
            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        engine = sa.create_engine(direct_url, poolclass=sa.pool.NullPool)
        try:
            started = time.monotonic()
            waiting = set(ids)
            warm_limit = min(deadline, started + args.warmup_limit)
            while waiting and time.monotonic() < warm_limit and launcher.poll() is None:
                time.sleep(2)
                with engine.connect() as conn:
                    done = {r.worker for r in conn.execute(FINISHED_SQL, {"workers": list(waiting)})}
                waiting -= done
            row.started = len(child_pids(launcher.pid))
            if waiting:
                row.note = f"{len(waiting)}/{args.workers} had not finished a trial after {time.monotonic() - started:.0f} s"
            print(f"# {mode}: {args.workers - len(waiting)} workers warm after {time.monotonic() - started:.0f} s; measuring {args.window:.0f} s",
                  flush=True)
            sampler.reset()
            t0 = dt.datetime.now(dt.UTC)
            cpu0 = {pid: cpu_seconds([pid]) for pid in server_pids(server)}
            time.sleep(max(0.0, min(args.window, deadline - time.monotonic())))
            t1 = dt.datetime.now(dt.UTC)
            # Backends that lived through the window: their CPU time now minus at its start (new ones: all of it).
            row.db_cpu_s = sum(cpu_seconds([pid]) - cpu0.get(pid, 0.0) for pid in server_pids(server))
            row.window_s = (t1 - t0).total_seconds()
            row.server_connections = sampler.server_max
            row.client_connections = sampler.client_max if bouncer_port is not None else None
            row.fleet_pss_gb = pss_gb(child_pids(launcher.pid))
            row.load = os.getloadavg()[0]
            with engine.connect() as conn:
                finished = [(r.worker, as_utc(r.started_at), as_utc(r.completed_at)) for r in conn.execute(FINISHED_SQL, {"workers": ids})]
                row.lost = int(conn.execute(LOST_SQL, {"workers": ids}).scalar() or 0)
            row.trials = sum(1 for _, _, done_at in finished if t0 <= done_at <= t1)
            for (w0, _, end0), (w1, start1, _) in zip(finished, finished[1:], strict=False):
                if w0 == w1 and t0 <= start1 <= t1:
                    row.claim_ms.append(1000 * (start1 - end0).total_seconds())
        finally:
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=90)
            except subprocess.TimeoutExpired:
                for pid in child_pids(launcher.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                launcher.kill()
                launcher.wait()
            engine.dispose()
        row.min_available_gb = sampler.min_available
        codes_file = log_dir / "exit_codes.json"
        codes = json.loads(codes_file.read_text()) if codes_file.exists() else {}
        bad_exits = {w: c for w, c in codes.items() if c != 0}
        bad_lines = [line for log in sorted(log_dir.glob(f"{mode}-*.log")) for line in log.read_text(errors="replace").splitlines()
                     if any(word in line for word in BAD_LOG_WORDS)]
        row.errors = len(bad_exits) + len(bad_lines) + (0 if codes_file.exists() else 1)
        row.error_samples = [f"exit {c}: {w}" for w, c in list(bad_exits.items())[:3]] + bad_lines[:5]
        if row.errors == 0:
            subprocess.run(["rm", "-rf", str(log_dir)], check=False)
        else:
            row.note = (row.note + "; " if row.note else "") + f"logs in {log_dir}"
    return row


# --------------------------------------------------------------------------------------------------
# The run


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(rows: list[Row]) -> None:
    print("| path | workers | trial s | server connections | client connections | trials/s | efficiency |"
          " claim p50 / p95 ms | DB CPU s | trials per DB core-s | errors | lost trials | fleet PSS GB | min available GB | load | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        efficiency = r.trials_per_s / (r.workers / r.sleep_s) if r.sleep_s else None
        print(f"| {r.mode} | {r.workers} | {r.sleep_s:g} | {r.server_connections} | {fmt(r.client_connections)} | {r.trials_per_s:.2f} |"
              f" {fmt(None if efficiency is None else 100 * efficiency)}% | {fmt(percentile(r.claim_ms, 50))} / {fmt(percentile(r.claim_ms, 95))} |"
              f" {r.db_cpu_s:.1f} | {fmt(r.trials / r.db_cpu_s if r.db_cpu_s else None, 1)} | {r.errors} | {r.lost} | {r.fleet_pss_gb:.1f} | {r.min_available_gb:.1f} | {r.load:.1f} | {r.note} |", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--launch":
        _, _, url, workers, sleep_s, stagger_s, log_dir, prefix = sys.argv
        launch(url, int(workers), float(sleep_s), float(stagger_s), Path(log_dir), prefix)
        return
    parser = argparse.ArgumentParser(description="The same synthetic worker fleet through PgBouncer and straight to PostgreSQL.")
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=60.0, help="synthetic trial seconds")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds per fleet")
    parser.add_argument("--pool-size", type=int, default=40, help="PgBouncer server connections for the database")
    parser.add_argument("--stagger", type=float, default=1.0, help="seconds between worker starts (2 cores: each start costs ~1 CPU-s)")
    parser.add_argument("--warmup-limit", type=float, default=420, help="most seconds to wait for every worker's first trial")
    parser.add_argument("--modes", default="pgbouncer,direct", help="which fleets, in order")
    parser.add_argument("--time-limit", type=float, default=1200, help="stop measuring after this many seconds in all")
    args = parser.parse_args()
    deadline = time.monotonic() + args.time_limit
    started = time.monotonic()
    pgbouncer_version = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with private_postgres(settings={"max_connections": str(4 * args.workers + 50), "shared_buffers": "256MB"}) as server:
        admin_url = server.url()
        with sa.create_engine(admin_url, poolclass=sa.pool.NullPool).connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
        print(f"# {args.workers} workers per fleet, {args.sleep:g} s synthetic trials, {args.window:.0f} s windows; private PostgreSQL "
              f"{version} (max_connections {4 * args.workers + 50}); {pgbouncer_version}, transaction pooling, pool {args.pool_size}; "
              f"{os.cpu_count()} CPUs, {available_gb():.1f} GB available; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", flush=True)
        # 12 studies; even an ideal fleet finishes at most workers / S trials per second.
        trials_per_study = int(args.workers * (args.warmup_limit + args.window + 60) / args.sleep / 12) + 50
        with template_database(admin_url, "bench_bouncer_tmpl", trials=trials_per_study, matrix={}) as template:  # the default 12 studies
            print(f"# template ready after {time.monotonic() - started:.0f} s", flush=True)
            rows = []
            for mode in args.modes.split(","):
                if time.monotonic() > deadline:
                    print(f"# time limit reached: {mode} not run", flush=True)
                    break
                row = measure_fleet(mode, server, admin_url, template, args, deadline)
                rows.append(row)
                print(f"# {mode}: {row.trials_per_s:.2f} trials/s, {row.server_connections} server connections, {row.errors} errors, "
                      f"at {time.monotonic() - started:.0f} s", flush=True)
                for sample in row.error_samples:
                    print(f"#   {sample[:200]}", flush=True)
    print()
    print_table(rows)
    print(f"\n# total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
