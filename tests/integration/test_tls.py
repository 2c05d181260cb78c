"""A database on another host: TLS and a password, on a private server that takes nothing else.

The server (tests/private_postgres.py) has a certificate for `localhost` signed by a throw-away CA and
a pg_hba.conf that rejects connections without TLS; every role needs a password (scram-sha-256).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.store import engines, schema
from tests.private_postgres import Server, private_postgres, why_unavailable
from tests.service_helpers import CALM, create, make_dataset, start_worker

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=f"no private PostgreSQL: {why_unavailable()}")

TLS_ONLY = [
    "hostssl all all 127.0.0.1/32 scram-sha-256",
    "hostnossl all all 127.0.0.1/32 reject",
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with private_postgres(tls=True, hba=TLS_ONLY) as s:
        yield s


def uses_tls(url: str) -> bool:
    engine = engines.connect(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar())
    finally:
        engine.dispose()


def test_sslmode_require_encrypts(server: Server) -> None:
    assert uses_tls(server.url(sslmode="require"))


def test_verify_full_checks_the_ca_and_the_host_name(server: Server, tmp_path: Path) -> None:
    assert server.ca_file is not None
    assert uses_tls(server.url(host="localhost", sslmode="verify-full", sslrootcert=server.ca_file))
    # The certificate names localhost, not 127.0.0.1: verify-full refuses the address, in one line.
    with pytest.raises(UserError, match=r"^cannot reach the database at 127\.0\.0\.1.*(does not match|certificate)"):
        engines.connect(server.url(host="127.0.0.1", sslmode="verify-full", sslrootcert=server.ca_file))
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() if Path("/etc/ssl/certs/ca-certificates.crt").exists() else "")
    with pytest.raises(UserError, match=r"^cannot reach the database at localhost"):
        engines.connect(server.url(host="localhost", sslmode="verify-full", sslrootcert=other_ca))


def test_plain_text_and_missing_password_are_refused(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="no encryption|rejects connection"):
        engines.connect(server.url(sslmode="disable"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(UserError, match="password"):
        engines.connect(server.url(password=False, sslmode="require"))


def test_password_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", server.password)
    assert uses_tls(server.url(password=False, sslmode="require"))


def test_a_worker_runs_trials_over_verify_full(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole worker path (claim, heartbeat, record, tell) over TLS, the password only in PGPASSWORD."""
    assert server.ca_file is not None
    with engines.scratch_database(server.url(sslmode="require"), "tls") as scratch:
        name = sa.engine.make_url(scratch).database
        url = server.url(host="localhost", database=name, password=False, sslmode="verify-full", sslrootcert=server.ca_file)
        monkeypatch.setenv("PGPASSWORD", server.password)
        schema.init_db(url)
        dataset = make_dataset(url)
        create(url, dataset=dataset, budgets=("100K",), horizons=(1,), trials=2, preset="smoke")
        worker = start_worker(url, "--synthetic", "0", "--device", "cpu", *CALM, log_dir=tmp_path)
        assert worker.wait(timeout=120) == 0, (tmp_path / next(p.name for p in tmp_path.iterdir())).read_text()[-2000:]
        engine = engines.connect(url)
        try:
            with engine.connect() as conn:
                states = conn.execute(sa.text("SELECT state, count(*) FROM trial_results GROUP BY state")).all()
        finally:
            engine.dispose()
        assert dict(states) == {"COMPLETE": 2}


def test_remote_workers_compose_override_requires_tls_and_a_password() -> None:
    """docker/compose.remote-workers.yml: workers on another host reach the database only with
    verify-full against a mounted CA, the password from .env, no default for any secret."""
    from tests.acceptance.test_compose import load

    path = Path(__file__).resolve().parents[2] / "docker" / "compose.remote-workers.yml"
    worker = load(path)["services"]["worker"]
    url = worker["environment"]["HPO_DATABASE_URL"]
    assert "sslmode=verify-full" in url and "sslrootcert=/run/scalesweep/db-ca.crt" in url
    assert "${POSTGRES_PASSWORD:?" in url and "${REMOTE_DB_HOST:?" in url, "required, never defaulted"
    assert worker["volumes"] == ["${DB_CA_FILE:?set DB_CA_FILE in .env}:/run/scalesweep/db-ca.crt:ro"]
    assert "trust" not in path.read_text()
