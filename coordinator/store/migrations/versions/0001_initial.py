"""The project's tables as released at f068c87: series, datasets, study_specs, trial_records,
trial_epochs, device_leases, baselines (frozen DDL in 0001_initial.sql)."""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    sql = (Path(__file__).with_suffix(".sql")).read_text()
    for statement in sql.split(";\n"):
        lines = [line for line in statement.splitlines() if not line.startswith("--")]
        if "".join(lines).strip():
            op.execute("\n".join(lines))


def downgrade() -> None:
    for table in ("trial_epochs", "trial_records", "study_specs", "device_leases", "baselines", "datasets", "series"):
        op.drop_table(table)
