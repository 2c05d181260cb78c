"""Checkpoints: the content-addressed record of every stored model file (coordinator/store/artifacts.py),
and a reference to it from the evaluation run and the search trial that produced it.

A new table and two nullable columns: rows written before this revision keep no checkpoint (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_checkpoints"
down_revision = "0004_walk_forward"
branch_labels = None
depends_on = None

REFERENCING = ("evaluation_runs", "trial_records")


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("sha256", sa.Text, primary_key=True),  # of the file's bytes: same content, same record
        sa.Column("artifact_id", sa.Text, nullable=False, unique=True),  # Optuna's artifact id in `store`
        sa.Column("store", sa.Text, nullable=False),  # file:///... or s3://bucket/prefix, never credentials
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("n_params", sa.BigInteger, nullable=False),
        sa.Column("seen_through", sa.Date, nullable=False),  # the last day whose data shaped the weights
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    for table in REFERENCING:
        op.add_column(table, sa.Column("checkpoint_sha256", sa.Text, sa.ForeignKey("checkpoints.sha256"), nullable=True))


def downgrade() -> None:
    for table in REFERENCING:
        op.drop_column(table, "checkpoint_sha256")
    op.drop_table("checkpoints")
