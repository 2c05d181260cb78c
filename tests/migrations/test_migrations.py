"""Schema migrations: a fresh database has exactly the models' schema, and a database made by the
previous release (f068c87, before the ledger), holding finished, retried and queued trials, upgrades
in place to the same schema with nothing lost, and its studies then finish on the new ledger."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from coordinator.store import engines, migrations, schema, tables
from tests.service_helpers import REPO, rows, start_worker
from tests.acceptance.test_worker import assert_targets_met_exactly, finish

PREVIOUS_RELEASE = "f068c87"
OUR_TABLES = sorted(tables.metadata.tables)

# Run by the previous release's own code: its db init, a study of 4 trials, 2 finished by its
# worker, a third lost (SIGKILL) and re-queued by its `reap`, the fourth still queued.
OLD_RELEASE_SCRIPT = """
import signal, subprocess, sys, time
from coordinator import db
from tests.service_helpers import CALM, FAST, create, make_dataset, start_worker, wait_for, scalar
url = sys.argv[1]
db.init_db(url)
make_dataset(url)
create(url, preset="smoke", budgets=("100K",), horizons=(1,), trials=4)
assert start_worker(url, "--synthetic", "0", "--max-trials", "2", "--worker-id", "old-a", *CALM).wait(timeout=120) == 0
victim = start_worker(url, "--synthetic", "60", "--worker-id", "old-victim", *FAST)
engine = db.make_engine(url)
wait_for(lambda: scalar(engine, "SELECT count(*) FROM trials WHERE state = 'RUNNING'") == 1, 60, "the claim")
time.sleep(1.5)
victim.send_signal(signal.SIGKILL)
victim.wait()
time.sleep(4)
done = subprocess.run([sys.executable, "-m", "coordinator.cli", "--database-url", url, "reap", "--grace-period", "3"],
                      capture_output=True, text=True)
assert done.returncode == 0 and "reaped 1" in done.stdout, done.stdout + done.stderr
print("old release done")
"""


def schema_signature(url: str) -> dict[str, object]:
    """Columns (type, null, default), indexes and constraints of our tables, as the catalogue has them."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text(
                    "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = ANY(:t) ORDER BY 1, 2"
                ),
                {"t": OUR_TABLES},
            ).all()
            indexes = conn.execute(
                sa.text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(:t) ORDER BY 1, 2"),
                {"t": OUR_TABLES},
            ).all()
            constraints = conn.execute(
                sa.text(
                    "SELECT c.conrelid::regclass::text AS t, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                    "WHERE c.conrelid::regclass::text = ANY(:t) ORDER BY 1, 2"
                ),
                {"t": OUR_TABLES},
            ).all()
            views = conn.execute(sa.text("SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1")).all()
    finally:
        engine.dispose()
    return {"columns": columns, "indexes": indexes, "constraints": constraints, "views": views}


def test_fresh_database_has_exactly_the_models_schema(initialised_db: str) -> None:
    engine = sa.create_engine(initialised_db, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision() == "0005_checkpoints"
            diffs = compare_metadata(MigrationContext.configure(conn), tables.metadata)
            # Optuna's tables are Optuna's: only differences on ours count.
            ours = [d for d in diffs if not (d[0] == "remove_table" and d[1].name not in OUR_TABLES)]
            ours = [d for d in ours if not (isinstance(d, tuple) and d[0] in ("remove_index",) and d[1].table.name not in OUR_TABLES)]
            assert ours == []
            # Optuna's own version table is untouched and separate from ours.
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def previous_release(tmp_path: Path, commit: str = PREVIOUS_RELEASE) -> Path:
    """That release's tree, checked out of this repository's history under tmp_path."""
    folder = tmp_path / commit
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=False)
    if archive.returncode != 0:
        pytest.skip(f"the previous release {commit} is not in this checkout's history")
    tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(folder, filter="data")
    return folder


def run_previous_release(old: Path, script: str, url: str, timeout: int, **env: str) -> None:
    """Run `script` with the previous release's own code on the database at `url`; it prints 'old release done'."""
    made = subprocess.run([sys.executable, "-c", script, url], cwd=old, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(old), "PYTHONUNBUFFERED": "1", **env})
    assert made.returncode == 0 and "old release done" in made.stdout, made.stdout[-2000:] + made.stderr[-3000:]


def test_previous_release_database_upgrades_in_place(admin_url: str, tmp_path: Path) -> None:
    old = previous_release(tmp_path)
    with engines.scratch_database(admin_url, "ss_migr_old") as url, engines.scratch_database(admin_url, "ss_migr_new") as fresh:
        run_previous_release(old, OLD_RELEASE_SCRIPT, url, timeout=300)
        engine = engines.make_engine(url)
        try:
            records_before = rows(engine, "SELECT * FROM trial_records ORDER BY trial_id")
            epochs_before = rows(engine, "SELECT * FROM trial_epochs ORDER BY trial_id, epoch")
            trials_before = rows(engine, "SELECT trial_id, number, state::text AS state FROM trials ORDER BY trial_id")
            assert [t["state"] for t in trials_before].count("COMPLETE") == 2 and len(records_before) == 3  # 2 COMPLETE + the lost one

            done = schema.init_db(url)  # the upgrade, in place
            assert f"schema {migrations.head_revision()} (upgraded from 0001_initial)" in done

            # Nothing lost: the old rows are all still there, unchanged.
            records_after = rows(engine, "SELECT * FROM trial_records ORDER BY trial_id")
            assert [r.pop("checkpoint_sha256") for r in records_after] == [None] * 3  # a column added since: no checkpoint
            assert records_after == records_before
            assert rows(engine, "SELECT * FROM trial_epochs ORDER BY trial_id, epoch") == epochs_before
            assert rows(engine, "SELECT trial_id, number, state::text AS state FROM trials ORDER BY trial_id") == trials_before
            # ...and the ledger tells the same story as the old views did.
            assert rows(engine, "SELECT slots, waiting, running, finished, claims FROM work_counts") == [
                {"slots": 4, "waiting": 2, "running": 0, "finished": 2, "claims": 3}
            ]
            progress = rows(engine, "SELECT complete, failed, retried, waiting, target_trials FROM study_progress")
            assert progress == [{"complete": 2, "failed": 0, "retried": 1, "waiting": 2, "target_trials": 4}]
            attempts = rows(engine, "SELECT worker, state, reason FROM attempts ORDER BY trial_number")
            assert [(a["worker"], a["state"]) for a in attempts] == [("old-a", "COMPLETE"), ("old-a", "COMPLETE"), ("old-victim", "FAIL")]
            assert attempts[2]["reason"].startswith("lost: no heartbeat")
        finally:
            engine.dispose()

        # The same schema as a database created fresh by this release.
        schema.init_db(fresh)
        assert schema_signature(url) == schema_signature(fresh)

        # The new release's workers finish the upgraded study exactly.
        worker = start_worker(url, "--synthetic", "0", "--heartbeat-interval", "1", "--grace-period", "20", log_dir=tmp_path)
        assert finish([worker]) == [0]
        engine = engines.make_engine(url)
        try:
            assert_targets_met_exactly(engine)
            assert rows(engine, "SELECT complete, finished FROM study_progress") == [{"complete": 4, "finished": 4}]
        finally:
            engine.dispose()
