"""The read-only role cannot stall the service: its limits hold, it cannot take or block the
service's locks, and `db init` is not held up by it. On a private server: the role and its
connection limit are cluster-wide, so the shared server's other users are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.lifecycle.reconnect import describe_cause
from coordinator.store import engines, locks, roles
from coordinator.store.schema import init_db
from coordinator.store.roles import READER_ROLE
from tests.private_postgres import Server, private_postgres, why_unavailable
from tests.service_helpers import REPO, create, make_dataset, scalar
from worker import leases

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=f"no private PostgreSQL: {why_unavailable()}")

READER_PASSWORD = "reader-secret"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with private_postgres(settings={"max_connections": "60"}) as s:
        yield s


@pytest.fixture
def url(server: Server) -> Iterator[str]:
    with engines.scratch_database(server.url(), "reader") as made:
        init_db(made, reader_password=READER_PASSWORD)
        yield made


def as_reader(url: str, **kwargs: object) -> psycopg.Connection:
    u = sa.engine.make_url(url)
    return psycopg.connect(host=u.host, port=u.port, dbname=u.database, user=READER_ROLE, password=READER_PASSWORD, **kwargs)


def refused(conn: psycopg.Connection, statement: str) -> str:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    conn.rollback()
    return str(caught.value).splitlines()[0]


def test_reader_cannot_lift_the_limits_that_hold(url: str) -> None:
    with as_reader(url) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1min",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("5s",)
        assert conn.execute("SHOW temp_file_limit").fetchone() == ("1GB",)
        conn.execute("SET default_transaction_read_only = off")  # a convenience it may drop: privileges are the guard
        conn.commit()
        assert "permission denied" in refused(conn, f"ALTER ROLE {READER_ROLE} CONNECTION LIMIT -1")
        assert "permission denied" in refused(conn, "SET temp_file_limit = -1")
        assert "permission denied" in refused(conn, f"ALTER ROLE {READER_ROLE} SET temp_file_limit = -1")
        assert "permission denied" in refused(conn, "SELECT pg_advisory_lock(23714, 0)")
        assert "permission denied" in refused(conn, "SELECT pg_try_advisory_xact_lock(1)")
        assert "permission denied" in refused(conn, "SELECT * FROM service_locks FOR UPDATE")
        assert "permission denied" in refused(conn, "SELECT * FROM device_leases")
        # PostgreSQL lets any role change its own password and session defaults: `db init` puts them back.
        conn.execute(f"ALTER ROLE {READER_ROLE} SET statement_timeout = 0")
        conn.commit()
    init_db(url, reader_password=READER_PASSWORD)
    with as_reader(url) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1min",)


def test_connection_limit_holds(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(roles.ENV_READER_CONNECTIONS, "3")
    init_db(url, reader_password=READER_PASSWORD)
    held = [as_reader(url) for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role") as refused_one:
            as_reader(url)
        assert describe_cause(refused_one.value).startswith("the role's connection limit is reached")
    finally:
        for conn in held:
            conn.close()


def idle_reader(url: str) -> psycopg.Connection:
    """A reader idle in a transaction after reading every view: its locks on the views and the tables
    under them stay held until it ends (it lifted its own idle timeout first)."""
    conn = as_reader(url, autocommit=True)
    conn.execute("SET idle_in_transaction_session_timeout = 0")
    conn.execute("BEGIN")
    for view in conn.execute("SELECT table_name FROM information_schema.views WHERE table_schema = 'public'").fetchall():
        conn.execute(f'SELECT * FROM "{view[0]}" LIMIT 1')
    return conn


def test_held_reader_locks_block_no_lease_no_claim_no_data_write(url: str, server: Server) -> None:
    create(url, dataset=make_dataset(url), preset="smoke", budgets=("100K",), horizons=(1,), trials=2)
    admin = psycopg.connect(sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)
    # As if `db init` had not run as a superuser: the advisory lock functions are the reader's again.
    admin.execute(f"GRANT EXECUTE ON FUNCTION pg_advisory_lock(integer, integer), pg_advisory_lock(bigint) TO {READER_ROLE}")
    reader = idle_reader(url)
    reader.execute("SELECT pg_advisory_lock(23714, 0), pg_advisory_lock(hashtext('scalesweep.db_init'))")  # the keys of old
    engine = engines.make_engine(url)
    try:
        started = time.monotonic()
        gpu = leases.Gpu(key="GPU-fake", index=0, name="fake", visible_id="0")
        lease = leases.acquire(engine, [gpu], "w1", share=1, ttl_s=30)
        assert lease is not None and time.monotonic() - started < 2
        make_dataset(url, symbol="OTHER")  # the data registry's service lock
        worker = subprocess.run([sys.executable, "-m", "worker.cli", "--database-url", url, "--synthetic", "0",
                                 "--max-trials", "1", "--heartbeat-interval", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr[-2000:]
        assert scalar(engine, "SELECT count(*) FROM attempts WHERE state = 'COMPLETE'") == 1
        # A flood of the lock table: the reapers' check ends the session that holds it.
        reader.execute("SELECT count(pg_advisory_lock(g)) FROM generate_series(1, 2000) g")
        ended = roles.enforce_reader_limits(engine)
        assert len(ended) == 1 and "locks held (limit 500)" in ended[0], ended
    finally:
        engine.dispose()
        reader.close()
        admin.close()


def test_watchdog_ends_reader_sessions_past_their_limits(url: str) -> None:
    sleeper = as_reader(url, autocommit=True)
    sleeper.execute("SET statement_timeout = 0")  # any role may lift its own timeout
    errors: list[str] = []

    def sleep() -> None:
        try:
            sleeper.execute("SELECT pg_sleep(60)")
        except psycopg.Error as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=sleep)
    thread.start()
    idle = as_reader(url)
    idle.execute("SET idle_in_transaction_session_timeout = 0")
    idle.execute("SELECT 1")  # a transaction left open
    time.sleep(2.5)
    engine = engines.make_engine(url)
    try:
        ended = roles.enforce_reader_limits(engine, statement_s=1, idle_s=1)
    finally:
        engine.dispose()
    thread.join(timeout=10)
    assert len(ended) == 2 and any("statement running" in e for e in ended) and any("idle in a transaction" in e for e in ended), ended
    assert errors and "terminat" in errors[0]
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    sleeper.close()
    idle.close()


def test_db_init_ends_an_idle_in_transaction_reader_within_its_lock_timeout(url: str) -> None:
    reader = idle_reader(url)
    started = time.monotonic()
    done = init_db(url, reader_password=READER_PASSWORD, lock_timeout_s=2)
    assert time.monotonic() - started < 15 and any(d.startswith("sql/") for d in done)
    with pytest.raises(psycopg.OperationalError):
        reader.execute("SELECT 1")
    reader.close()


def test_db_init_fails_in_one_line_when_another_session_holds_a_view(url: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT count(*) FROM study_progress"))  # idle in transaction from here on
            started = time.monotonic()
            with pytest.raises(UserError) as caught:
                init_db(url, lock_timeout_s=2)
            assert time.monotonic() - started < 15
            message = str(caught.value)
            assert "\n" not in message and "waited over 2 s for a lock held by pid" in message and "idle in transaction" in message
    finally:
        engine.dispose()


FAKE_NVIDIA_SMI = "#!/bin/sh\necho '0, GPU-fake-uuid, Fake GPU'\n"


def test_sigterm_is_honoured_while_waiting_for_a_gpu_lease(url: str, tmp_path: Path) -> None:
    create(url, dataset=make_dataset(url), preset="smoke", budgets=("100K",), horizons=(1,), trials=1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    engine = engines.make_engine(url)
    try:
        with engine.begin() as conn:  # every slot of the one GPU leased by someone else
            conn.execute(sa.text("INSERT INTO device_leases (device, slot, worker, host, device_index, expires_at) "
                                 "VALUES ('GPU-fake-uuid', 0, 'other', 'elsewhere', 0, now() + interval '1 hour')"))
        with engine.begin() as conn:
            locks.hold(conn, leases.LEASE_LOCK)  # and the lease lock held: the worker waits inside SQL too
            proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "--database-url", url, "--device", "cuda",
                                     "--heartbeat-interval", "1"], cwd=REPO, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
            time.sleep(8)  # start-up (imports, dataset) and into the wait
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-2000:]
        assert time.monotonic() - started < 6, out[-2000:]
        assert "SIGTERM received" in out and "Traceback" not in out
    finally:
        engine.dispose()
