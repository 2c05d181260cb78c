"""Workers through PgBouncer in transaction pooling mode (Debian's pgbouncer), on a private server.

In transaction mode consecutive transactions of one client may run on different server connections,
so nothing of a session may be relied on: no session-level SET or advisory lock, no prepared
statement kept across transactions. The fleet below shares fewer server connections than it has
workers; any such reliance shows up as failed trials, errors in the logs, or non-zero exits.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.store import engines, schema
from tests.private_postgres import Server, free_port, own, private_pgbouncer, private_postgres, why_unavailable
from tests.service_helpers import CALM, create, make_dataset, start_worker

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=f"no private PostgreSQL: {why_unavailable()}")

POOL_SIZE = 4
WORKERS = 5
BAD_LOG_WORDS = ("ERROR", "Traceback", "connection lost", "prepared statement")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with private_postgres() as s:
        yield s


def server_connections(admin: sa.Engine, database: str) -> int:
    with admin.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": database}).scalar() or 0)


def test_worker_fleet_through_transaction_pooling(server: Server, tmp_path: Path) -> None:
    with engines.scratch_database(server.url(), "bouncer") as direct_url:
        database = str(sa.engine.make_url(direct_url).database)
        schema.init_db(direct_url)
        create(direct_url, dataset=make_dataset(direct_url), preset="smoke", budgets=("100K",), horizons=(1, 5), trials=8)
        with private_pgbouncer(server, pool_size=POOL_SIZE) as port:
            pooled_url = server.url(database=database, port=port)
            admin = sa.create_engine(server.url(), poolclass=sa.pool.NullPool)
            most = 0
            done = threading.Event()

            def sample() -> None:
                nonlocal most
                while not done.wait(0.2):
                    most = max(most, server_connections(admin, database))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            workers = [start_worker(pooled_url, "--synthetic", "0.2", "--device", "cpu", *CALM, log_dir=tmp_path) for _ in range(WORKERS)]
            codes = [w.wait(timeout=240) for w in workers]
            done.set()
            sampler.join()
            admin.dispose()
        logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.log")))
        assert codes == [0] * WORKERS, logs[-3000:]
        bad = [line for line in logs.splitlines() if any(word in line for word in BAD_LOG_WORDS)]
        assert not bad, "\n".join(bad[:20])
        assert 0 < most <= POOL_SIZE, f"{most} server connections for {WORKERS} workers through a pool of {POOL_SIZE}"
        engine = engines.make_engine(direct_url)
        try:
            with engine.connect() as conn:
                progress = conn.execute(sa.text("SELECT study_name, finished, target_trials FROM study_progress")).all()
                states = dict(conn.execute(sa.text("SELECT state, count(*) FROM trial_results GROUP BY state")).all())
                workers_seen = conn.execute(sa.text("SELECT count(DISTINCT worker) FROM trial_results")).scalar()
        finally:
            engine.dispose()
        assert all(row.finished == row.target_trials for row in progress), progress
        assert states == {"COMPLETE": 16}, states
        assert workers_seen >= 2, "the trials were shared out"



def test_compose_pgbouncer_entrypoint_serves_the_database(server: Server) -> None:
    """docker/pgbouncer/entrypoint.sh (the compose service's) run for real: scram from the client,
    transaction pooling, the server's password only from the environment."""
    if shutil.which("pgbouncer") is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="scalesweep_entrypoint_"))  # readable by the server user, unlike tmp_path
    try:
        folder.chmod(0o755)
        own(folder)
        script = folder / "entrypoint.sh"
        shutil.copy(REPO / "docker" / "pgbouncer" / "entrypoint.sh", script)
        port = free_port()
        env = {"PATH": os.environ["PATH"], "PGBOUNCER_CONF_DIR": str(folder), "DB_HOST": "127.0.0.1", "DB_PORT": str(server.port),
               "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": server.password, "PGBOUNCER_LISTEN": "127.0.0.1",
               "PGBOUNCER_PORT": str(port), "PGBOUNCER_POOL_SIZE": "2"}
        as_root = os.geteuid() == 0  # PgBouncer refuses root: run the script as the container does, unprivileged
        proc = subprocess.Popen(["sh", str(script)], env=env, user="postgres" if as_root else None, group="postgres" if as_root else None,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                    time.sleep(0.1)
            engine = engines.connect(server.url(port=port))
            try:
                with engine.connect() as conn:
                    assert conn.execute(sa.text("SELECT current_user")).scalar() == "postgres"
            finally:
                engine.dispose()
            with pytest.raises(UserError, match="authentication failed"):
                engines.connect(server.url(port=port).replace(server.password, "wrong"))
            assert "pool_mode = transaction" in (folder / "pgbouncer.ini").read_text()
            assert (folder / "userlist.txt").stat().st_mode & 0o077 == 0, "the password file is private"
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
