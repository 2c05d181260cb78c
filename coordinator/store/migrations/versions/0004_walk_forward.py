"""Walk-forward evaluation: runs per test fold, per-fold scores, the model comparison, power.

- evaluation_protocols.folds: the study's frozen fold boundaries (NULL: the single-period protocol);
- evaluation_runs.fold: which fold a run was trained for and scored on; 0 is the single test period
  of the protocol before walk-forward (every existing row), and the key gains it;
- evaluation_folds: per dataset version, horizon, model (a study's answer or a baseline) and fold,
  the fold's test period and its AUC, log loss and Brier score;
- model_comparisons: per dataset version, horizon and model, the pooled AUC and losses, its
  membership of the 90% model confidence set and its reliability curve;
- scaling_verdicts gains the folds, the folds won, the SPA p-value, the confidence set and the
  minimum detectable effects (NULL for a verdict of the single-period protocol).
Existing rows keep their values; nothing is dropped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_walk_forward"
down_revision = "0003_evaluation"
branch_labels = None
depends_on = None

def scaling_columns() -> list[sa.Column]:
    return [
        sa.Column("n_folds", sa.Integer),  # NULL: the single-period protocol
        sa.Column("folds_won", sa.Integer),  # folds where the answer's AUC beats the best baseline's
        sa.Column("spa_pvalue", sa.Float),  # H0: no budget's answer beats the best baseline (log loss)
        sa.Column("mcs", JSONB),  # the 90% model confidence set (model names)
        sa.Column("mde_slope", sa.Float),  # minimum detectable slope per decade (80% power, 5% level)
        sa.Column("mde_vs_baseline", sa.Float),  # minimum detectable difference to the best baseline
    ]


def upgrade() -> None:
    op.add_column("evaluation_protocols", sa.Column("folds", JSONB))
    op.add_column("evaluation_runs", sa.Column("fold", sa.Integer, nullable=False, server_default="0"))
    op.drop_constraint("evaluation_runs_pkey", "evaluation_runs", type_="primary")
    op.create_primary_key("evaluation_runs_pkey", "evaluation_runs", ["study_name", "rank", "seed", "fold"])
    for column in scaling_columns():
        op.add_column("scaling_verdicts", column)
    op.create_table(
        "evaluation_folds",
        sa.Column("dataset_name", sa.Text, primary_key=True),
        sa.Column("dataset_version", sa.Integer, primary_key=True),
        sa.Column("horizon", sa.Integer, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),  # a study name (its answer configuration) or a baseline model
        sa.Column("fold", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),  # study | baseline
        sa.Column("test_start", sa.Date, nullable=False),
        sa.Column("test_end", sa.Date, nullable=False),
        sa.Column("n_days", sa.Integer, nullable=False),
        sa.Column("auc", sa.Float),  # NULL when the fold's labels are one class
        sa.Column("log_loss", sa.Float, nullable=False),
        sa.Column("brier", sa.Float, nullable=False),
        sa.Column("protocol_sha256", sa.Text, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "model_comparisons",
        sa.Column("dataset_name", sa.Text, primary_key=True),
        sa.Column("dataset_version", sa.Integer, primary_key=True),
        sa.Column("horizon", sa.Integer, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("auc", sa.Float, nullable=False),  # pooled over the folds' test days
        sa.Column("log_loss", sa.Float, nullable=False),
        sa.Column("brier", sa.Float, nullable=False),
        sa.Column("brier_reliability", sa.Float, nullable=False),  # the Brier score's calibration part
        sa.Column("in_mcs", sa.Boolean, nullable=False),
        sa.Column("mcs_pvalue", sa.Float),
        sa.Column("reliability", JSONB, nullable=False),  # [{mean_predicted, observed_rate, count}]
        sa.Column("protocol_sha256", sa.Text, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("model_comparisons")
    op.drop_table("evaluation_folds")
    for column in scaling_columns():
        op.drop_column("scaling_verdicts", column.name)
    op.execute("DELETE FROM evaluation_runs WHERE fold <> 0")
    op.drop_constraint("evaluation_runs_pkey", "evaluation_runs", type_="primary")
    op.create_primary_key("evaluation_runs_pkey", "evaluation_runs", ["study_name", "rank", "seed"])
    op.drop_column("evaluation_runs", "fold")
    op.drop_column("evaluation_protocols", "folds")
