"""The checkpoints revision on a database holding the previous schema's data: it upgrades in place,
every row is kept as it was (with no checkpoint: NULL), and the schema equals a fresh database's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from coordinator.store import migrations
from coordinator.store.engines import make_engine, optuna_storage, scratch_database
from coordinator.store.schema import init_db
from tests.service_helpers import rows
from tests.migrations.test_migrations import schema_signature

REVISION = Path(migrations.__file__).parent / "versions" / "0005_checkpoints.py"


def previous_revision() -> str:
    spec = importlib.util.spec_from_file_location("checkpoints_revision", REVISION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.down_revision


def fill_previous_schema(conn: sa.Connection) -> None:
    """A study, a finished trial and an evaluation run, written with the previous schema's columns."""
    conn.execute(sa.text(
        "INSERT INTO study_specs (study_name, study_id, budget, budget_params, horizon, dataset_name, dataset_version, dataset_sha256, "
        "objective, direction, target_trials, spec, spec_sha256, code_version) VALUES "
        "('s-h1', 1, '10K', 10000, 1, 'syn-a25', 1, 'abc', 'val_auc', 'maximize', 3, '{}', 'def', 'v0')"))
    conn.execute(sa.text("INSERT INTO trial_records (trial_id, study_name, trial_number, state, n_params, val_auc) "
                         "VALUES (7, 's-h1', 0, 'COMPLETE', 9876, 0.61)"))
    conn.execute(sa.text(
        "INSERT INTO evaluation_runs (study_name, rank, seed, protocol_sha256, trial_number, n_params, best_epoch, epochs_run, "
        "max_epochs, objective_value, val_auc, val_loss, test_auc, test_pr_auc, test_loss, test_positions, test_predictions, "
        "epochs, metrics) VALUES ('s-h1', 1, 1000000, 'p', 0, 9876, 2, 4, 5, 0.6, 0.6, 0.69, 0.55, 0.4, 0.7, "
        "ARRAY[100, 101], ARRAY[0.25, 0.75], '[]', '{}')"))


def test_upgrade_keeps_every_row_and_matches_a_fresh_schema(admin_url: str) -> None:
    with scratch_database(admin_url, "ss_migr_ckpt") as url, scratch_database(admin_url, "ss_migr_fresh") as fresh:
        optuna_storage(url).engine.dispose()  # Optuna's own tables, as `db init` makes them first
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                command.upgrade(migrations.config(conn), previous_revision())
                fill_previous_schema(conn)
            runs_before = rows(engine, "SELECT * FROM evaluation_runs")
            records_before = rows(engine, "SELECT * FROM trial_records")

            done = init_db(url)  # the upgrade, in place
            assert f"(upgraded from {previous_revision()})" in " ".join(done)

            runs_after = rows(engine, "SELECT * FROM evaluation_runs")
            records_after = rows(engine, "SELECT * FROM trial_records")
            assert [r.pop("checkpoint_sha256") for r in runs_after] == [None]
            assert [r.pop("checkpoint_sha256") for r in records_after] == [None]
            assert runs_after == runs_before and records_after == records_before
            assert rows(engine, "SELECT count(*) AS n FROM checkpoints") == [{"n": 0}]
        finally:
            engine.dispose()
        init_db(fresh)
        assert schema_signature(url) == schema_signature(fresh)
