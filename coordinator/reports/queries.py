"""Reading the read model (sql/*.sql views and the `baselines` table) as dict rows; nothing writes.

Everything the CLI and the HTML report show comes from here, so it is exactly what `psql` users see.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.reports.answer import with_test_auc
from coordinator.store import engines
from coordinator.studies.globs import matches, split_globs

Row = dict[str, Any]


def select_studies(rows: list[Row], pattern: str | None) -> list[Row]:
    """Rows whose study_name matches the glob (or any of comma-separated globs); a glob list matching
    nothing is an error."""
    globs = split_globs(pattern)
    if globs is None:
        return rows
    chosen = [r for r in rows if matches(r["study_name"], globs)]
    if not chosen:
        raise UserError(f"no study matching '{pattern}' (see `coordinator status`)")
    return chosen


def study_progress(engine: sa.Engine, pattern: str | None = None) -> list[Row]:
    rows = engines.read_rows(engine, "SELECT * FROM study_progress ORDER BY horizon NULLS LAST, budget_params NULLS LAST, study_name")
    return select_studies(rows, pattern)


def leaderboard(engine: sa.Engine, pattern: str | None = None) -> list[Row]:
    if pattern is not None:
        select_studies(study_progress(engine), pattern)  # unknown study: error even if nothing completed yet
    rows = engines.read_rows(engine, "SELECT * FROM leaderboard ORDER BY horizon NULLS LAST, budget_params NULLS LAST, study_name")
    globs = split_globs(pattern)
    # Once evaluated, the test AUC (with interval) of the study's answer sits next to its validation objective.
    return with_test_auc(engine, rows if globs is None else [r for r in rows if matches(r["study_name"], globs)])


def completed_trials(engine: sa.Engine) -> list[Row]:
    return engines.read_rows(
        engine,
        """
        SELECT study_name, budget, budget_params, horizon, dataset_name, dataset_version, trial_number,
               val_auc, n_params
        FROM trial_results
        WHERE state = 'COMPLETE' AND val_auc IS NOT NULL AND n_params IS NOT NULL
        """,
    )


def baselines(engine: sa.Engine) -> list[Row]:
    """Baseline validation AUCs per dataset version and horizon; none if the table is not there yet."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table("baselines"):
            return []
        columns = {c["name"] for c in inspector.get_columns("baselines")}
    needed = {"dataset_name", "dataset_version", "horizon", "model", "val_auc"}
    if not needed <= columns:
        return []
    return engines.read_rows(engine, "SELECT dataset_name, dataset_version, horizon, model, val_auc FROM baselines WHERE val_auc IS NOT NULL")


def view_columns(engine: sa.Engine, view: str) -> list[str]:
    """Column names in view order (so an empty leaderboard CSV still has its header)."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT * FROM {view} LIMIT 0")).keys())
