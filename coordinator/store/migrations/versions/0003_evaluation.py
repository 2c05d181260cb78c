"""The final evaluation's tables: protocols, re-trained runs, summarised results with intervals,
baselines scored on the same test days, and the scaling verdicts (see coordinator/evaluation/tables.py).

New tables only; nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0003_evaluation"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None

TABLES = ("scaling_verdicts", "evaluation_baselines", "evaluation_results", "evaluation_runs", "evaluation_protocols")


def upgrade() -> None:
    op.create_table(
        "evaluation_protocols",
        sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), primary_key=True),
        sa.Column("protocol", JSONB, nullable=False),
        sa.Column("protocol_sha256", sa.Text, nullable=False),
        # [{rank, trial_number, trial_id, params, objective, n_params}], rank 1 = best by the study's objective
        sa.Column("configurations", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "evaluation_runs",
        sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True),
        sa.Column("seed", sa.BigInteger, primary_key=True),
        sa.Column("protocol_sha256", sa.Text, nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),  # the search trial whose configuration this re-trains
        sa.Column("n_params", sa.BigInteger, nullable=False),
        sa.Column("best_epoch", sa.Integer, nullable=False),
        sa.Column("epochs_run", sa.Integer, nullable=False),
        sa.Column("max_epochs", sa.Integer, nullable=False),
        sa.Column("objective_value", sa.Float, nullable=False),  # the study's objective at the best epoch (validation)
        sa.Column("val_auc", sa.Float, nullable=False),
        sa.Column("val_loss", sa.Float, nullable=False),
        sa.Column("test_auc", sa.Float, nullable=False),
        sa.Column("test_pr_auc", sa.Float, nullable=False),
        sa.Column("test_loss", sa.Float, nullable=False),
        sa.Column("test_positions", ARRAY(sa.Integer), nullable=False),
        sa.Column("test_predictions", ARRAY(sa.Float), nullable=False),
        sa.Column("epochs", JSONB, nullable=False),  # the learning curve: [{epoch, train_loss, val_loss, val_auc, ...}]
        sa.Column("metrics", JSONB, nullable=False),  # every validation and test metric, training values used
        sa.Column("duration_s", sa.Float),
        sa.Column("device", sa.Text),
        sa.Column("worker", sa.Text),
        sa.Column("item_id", sa.BigInteger),  # the ledger's work item and attempt that produced this row
        sa.Column("attempt_id", sa.BigInteger),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "evaluation_results",
        sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True),
        sa.Column("protocol_sha256", sa.Text, nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("n_params", sa.BigInteger, nullable=False),
        sa.Column("n_seeds", sa.Integer, nullable=False),
        sa.Column("chosen", sa.Boolean, nullable=False),  # answers for its study (best mean validation objective)
        sa.Column("val_objective_mean", sa.Float, nullable=False),
        sa.Column("test_auc", sa.Float, nullable=False),  # mean over seeds
        sa.Column("test_auc_sd", sa.Float),  # over seeds
        sa.Column("test_auc_low", sa.Float, nullable=False),
        sa.Column("test_auc_high", sa.Float, nullable=False),
        sa.Column("test_pr_auc", sa.Float, nullable=False),
        sa.Column("test_pr_auc_low", sa.Float, nullable=False),
        sa.Column("test_pr_auc_high", sa.Float, nullable=False),
        sa.Column("best_baseline", sa.Text),
        sa.Column("vs_best_baseline", sa.Float),
        sa.Column("vs_best_baseline_low", sa.Float),
        sa.Column("vs_best_baseline_high", sa.Float),
        sa.Column("under_trained_runs", sa.Integer, nullable=False),
        sa.Column("block_length", sa.Integer, nullable=False),
        sa.Column("replicates", sa.Integer, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "evaluation_baselines",
        sa.Column("dataset_name", sa.Text, primary_key=True),
        sa.Column("dataset_version", sa.Integer, primary_key=True),
        sa.Column("horizon", sa.Integer, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("best", sa.Boolean, nullable=False),  # highest validation AUC (base rate excluded)
        sa.Column("val_auc", sa.Float, nullable=False),
        sa.Column("test_auc", sa.Float, nullable=False),
        sa.Column("test_auc_low", sa.Float, nullable=False),
        sa.Column("test_auc_high", sa.Float, nullable=False),
        sa.Column("test_pr_auc", sa.Float, nullable=False),
        sa.Column("test_pr_auc_low", sa.Float, nullable=False),
        sa.Column("test_pr_auc_high", sa.Float, nullable=False),
        sa.Column("block_length", sa.Integer, nullable=False),
        sa.Column("replicates", sa.Integer, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "scaling_verdicts",
        sa.Column("dataset_name", sa.Text, primary_key=True),
        sa.Column("dataset_version", sa.Integer, primary_key=True),
        sa.Column("horizon", sa.Integer, primary_key=True),
        sa.Column("protocol_sha256", sa.Text, nullable=False),
        sa.Column("n_studies", sa.Integer, nullable=False),
        sa.Column("slope_per_decade", sa.Float),  # NULL with a single model size
        sa.Column("slope_low", sa.Float),
        sa.Column("slope_high", sa.Float),
        sa.Column("answer_study", sa.Text),  # the chosen configuration with the best validation objective
        sa.Column("answer_test_auc", sa.Float),
        sa.Column("best_baseline", sa.Text),
        sa.Column("vs_best_baseline", sa.Float),
        sa.Column("vs_best_baseline_low", sa.Float),
        sa.Column("vs_best_baseline_high", sa.Float),
        sa.Column("n_test", sa.Integer, nullable=False),
        sa.Column("block_length", sa.Integer, nullable=False),
        sa.Column("replicates", sa.Integer, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("sentence", sa.Text, nullable=False),
        sa.Column("notes", JSONB, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
