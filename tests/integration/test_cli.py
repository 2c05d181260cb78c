"""The CLI grammar a newcomer relies on: global options anywhere, comma globs, formats, one dataset
at a time, one-line errors, the read-only role, Ctrl-C on `local`."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.store import engines, roles, urls
from tests.conftest import REPO
from tests.service_helpers import make_dataset
from tests.integration.test_views import populate

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def test_global_options_before_or_after_the_subcommand(initialised_db: str) -> None:
    libpq = urls.libpq_url(initialised_db)
    before = invoke("--database-url", initialised_db, "db", "url")
    after = invoke("db", "url", "--database-url", initialised_db)
    equals = invoke("db", "url", f"--database-url={initialised_db}")
    from_env = invoke("db", "url", env={urls.ENV_URL: initialised_db})
    for result in (before, after, equals, from_env):
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == libpq
    version = invoke("status", "--version")
    assert version.exit_code == 0 and version.stdout.startswith("scalesweep 0.")


@pytest.fixture
def populated(engine: sa.Engine, initialised_db: str) -> str:
    populate(engine, initialised_db)
    return initialised_db


def test_comma_globs_and_formats(populated: str) -> None:
    url = populated
    result = invoke("status", "--studies", "*300K*,*-min", "--format", "json", "--database-url", url)
    assert result.exit_code == 0, result.output
    names = sorted(r["study_name"] for r in json.loads(result.stdout))
    assert names == ["syn-a25-thr1pct-100K-h5-min", "syn-a25-thr1pct-300K-h1"]
    result = invoke("status", "--format", "csv", "--database-url", url)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0 and len(rows) == 3 and "eta_s" in rows[0]
    result = invoke("leaderboard", "--studies", "*-min, *100K-h1", "--format", "csv", "--database-url", url)
    assert result.exit_code == 0 and len(list(csv.DictReader(io.StringIO(result.stdout)))) == 2
    result = invoke("status", "--studies", ",", "--database-url", url)
    assert "bad --studies ','" in str(result.exception)


def test_no_silent_dataset_switch_on_status_and_leaderboard(engine: sa.Engine, populated: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE study_specs SET dataset_version = 2 WHERE study_name = 'syn-a25-thr1pct-100K-h5-min'"))
    for command in ("status", "leaderboard"):
        refused = subprocess.run([sys.executable, "-m", "coordinator.cli", command, "--database-url", populated],
                                 capture_output=True, text=True, timeout=120, cwd=REPO)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.strip() == (
            "error: these studies use 2 datasets (syn-a25:1, syn-a25:2): choose one with --dataset NAME[:VERSION], or --dataset all"
        )
    one = invoke("status", "--dataset", "syn-a25:1", "--format", "json", "--database-url", populated)
    assert one.exit_code == 0 and len(json.loads(one.stdout)) == 2
    every = invoke("status", "--dataset", "all", "--format", "json", "--database-url", populated)
    assert every.exit_code == 0 and len(json.loads(every.stdout)) == 3


def test_no_silent_dataset_switch_on_create_studies_and_baselines(initialised_db: str) -> None:
    make_dataset(initialised_db, symbol="SYN")
    make_dataset(initialised_db, symbol="ALT", seed=1)
    for command in (["create-studies", "--dry-run"], ["baselines"]):
        proc = subprocess.run([sys.executable, "-m", "coordinator.cli", *command, "--database-url", initialised_db],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert proc.stderr.strip() == (
            "error: 2 dataset versions are registered (alt-a25:1, syn-a25:1): choose one with --dataset NAME[:VERSION]"
        )


def test_export_csv_and_parquet(populated: str, tmp_path: Path) -> None:
    import pandas as pd

    result = invoke("export", "--database-url", populated)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert {"study_name", "trial_number", "state", "val_auc"} <= set(frame.columns) and len(frame) > 0
    out = tmp_path / "trials.parquet"
    result = invoke("export", "--format", "parquet", "--out", str(out), "--studies", "*-min", "--database-url", populated)
    assert result.exit_code == 0, result.output
    parquet = pd.read_parquet(out)
    assert set(parquet["study_name"]) == {"syn-a25-thr1pct-100K-h5-min"}
    refused = invoke("export", "--format", "parquet", "--database-url", populated)
    assert str(refused.exception) == "--format parquet needs --out FILE"


def test_db_shell_passes_arguments_to_psql(initialised_db: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "db", "shell", "--database-url", initialised_db, "--", "-Atc", "select 40 + 2"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr


def test_the_live_table_fits_80_columns_without_cutting_names() -> None:
    from coordinator.commands.local import compact_status_table

    names = [f"spy-a25-vix8-thr1pct-{b}-h{h}-seed2" for b in ("100K", "300K", "200M") for h in (1, 5)]
    rows = [
        {"study_name": n, "target_trials": 50, "finished": 12, "complete": 10, "pruned": 1, "failed": 1, "retried": 3,
         "running": 2, "remaining": 38, "eta_s": 3725.0, "best_objective": 0.53125}
        for n in names
    ]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(compact_status_table(rows))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "spy-a25-vix8-thr1pct-*" in text
    for n in names:
        assert n.removeprefix("spy-a25-vix8-thr1pct-") in text
    assert "…" not in text


def scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's stored SCRAM-SHA-256 verifier was made from this password (RFC 5802)."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, _server_key = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)


def test_reader_password_is_set_as_a_scram_verifier(initialised_db: str, admin_url: str) -> None:
    """The password `db init --reader-password` sets is the one a scram server checks (proved from the
    stored verifier, so it holds whatever pg_hba says on this test server)."""
    result = invoke("db", "init", "--reader-password", "s3cret'pw", "--database-url", initialised_db)
    assert result.exit_code == 0, result.output
    assert "password set" in result.stdout
    engine = engines.make_engine(admin_url)
    try:
        with engine.connect() as conn:
            verifier = conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = 'hpo_reader'")).scalar()
    finally:
        engine.dispose()
    assert verifier.startswith("SCRAM-SHA-256$")
    assert scram_matches(verifier, "s3cret'pw") and not scram_matches(verifier, "other")
    from_env = invoke("db", "init", "--database-url", initialised_db, env={roles.ENV_READER_PASSWORD: "from-env"})
    assert from_env.exit_code == 0 and "password set" in from_env.stdout


def reader_url(url: str) -> str:
    return make_url(url).set(username=roles.READER_ROLE, password=None).render_as_string(hide_password=False)


def test_reader_is_read_only_by_privileges_not_by_a_default(populated: str, admin_url: str) -> None:
    reader = sa.create_engine(reader_url(populated), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:  # a session default is the role's own to change
            conn.execute(sa.text("SET default_transaction_read_only = off"))
            conn.execute(sa.text("ALTER ROLE hpo_reader SET default_transaction_read_only = off"))
        with reader.connect() as conn:
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "off"
            assert conn.execute(sa.text("SELECT count(*) FROM study_progress")).scalar() == 3
        for statement in (
            "INSERT INTO study_specs (study_name) VALUES ('x')",
            "DELETE FROM trials",
            "SELECT * FROM trials",  # Optuna's tables are not the read model
            "CREATE TEMP TABLE t (x int)",
            "CREATE TABLE public.t (x int)",
            "SELECT lo_create(0)",
            "SELECT lo_from_bytea(0, 'x')",
        ):
            with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(statement))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("ALTER ROLE hpo_reader SET default_transaction_read_only = on"))
        reader.dispose()
        admin.dispose()


def test_ctrl_c_on_local_stops_the_workers_and_exits_130(initialised_db: str, tmp_path: Path) -> None:
    make_dataset(initialised_db, days=3000)
    env = {**os.environ, "SCALESWEEP_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "local", "--workers", "1", "--preset", "smoke", "--device", "cpu",
         "--report-dir", str(tmp_path / "report"), "--database-url", initialised_db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    engine = engines.make_engine(initialised_db)
    try:
        deadline = time.monotonic() + 300
        running = 0
        while time.monotonic() < deadline and proc.poll() is None and not running:
            time.sleep(1)
            with engine.connect() as conn:
                if sa.inspect(conn).has_table("study_specs"):
                    running = conn.execute(sa.text("SELECT count(*) FROM trial_results WHERE state = 'RUNNING'")).scalar()
        assert running, "no trial started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "done in" not in err and not (tmp_path / "report" / "index.html").exists()
    assert "1 worker started" in err.replace("\n", " ") or "1 worker" in err


def test_local_resumes_the_dataset_its_studies_use(engine: sa.Engine, populated: str) -> None:
    from coordinator.commands.local import choose_dataset
    from coordinator.errors import UserError

    make_dataset(populated, symbol="SYN")
    make_dataset(populated, symbol="ALT", seed=1)  # built later: "the latest" would silently switch to it
    assert choose_dataset(engine, None) == "syn-a25:1"
    assert choose_dataset(engine, "alt-a25") == "alt-a25:1"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE study_specs SET dataset_name = 'alt-a25' WHERE study_name = 'syn-a25-thr1pct-100K-h5-min'"))
    with pytest.raises(UserError, match=r"the existing studies use 2 datasets \(alt-a25:1, syn-a25:1\)"):
        choose_dataset(engine, None)


def test_dashboard_serves_the_same_database_on_localhost(populated: str) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "dashboard", "--port", str(port), "--database-url", populated],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None and body is None:
            try:
                body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read())
            except OSError:
                time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert body is not None, proc.stderr.read() if proc.stderr else ""
    assert {s["study_name"] for s in body["study_summaries"]} == {
        "syn-a25-thr1pct-100K-h1", "syn-a25-thr1pct-100K-h5-min", "syn-a25-thr1pct-300K-h1"}
