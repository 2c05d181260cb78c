"""What a finished trial leaves behind, in typed columns the SQL read model can index.

Optuna keeps its own trial rows (state, value, params, intermediate values, user attributes for the
dashboard). Next to them the worker writes one `trial_records` row per finished trial and one
`trial_epochs` row per epoch, so `sql/` views never parse JSON for the common columns and stay fast
at 100k trials. `study_specs` holds each study's immutable spec with the columns views group by.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from coordinator.schema import metadata

# One row per study created by `coordinator create-studies`. The spec itself never changes.
study_specs = sa.Table(
    "study_specs",
    metadata,
    sa.Column("study_name", sa.Text, primary_key=True),
    sa.Column("study_id", sa.Integer, nullable=False, unique=True),  # Optuna's studies.study_id
    sa.Column("budget", sa.Text, nullable=False),  # label, e.g. '2M'
    sa.Column("budget_params", sa.BigInteger, nullable=False),
    sa.Column("horizon", sa.Integer, nullable=False),
    sa.Column("dataset_name", sa.Text, nullable=False),
    sa.Column("dataset_version", sa.Integer, nullable=False),
    sa.Column("dataset_sha256", sa.Text, nullable=False),
    sa.Column("objective", sa.Text, nullable=False),  # e.g. 'val_auc'
    sa.Column("direction", sa.Text, nullable=False),  # 'maximize' | 'minimize'
    sa.Column("target_trials", sa.Integer, nullable=False),
    sa.Column("spec", JSONB, nullable=False),
    sa.Column("spec_sha256", sa.Text, nullable=False),
    sa.Column("code_version", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# One row per finished trial (COMPLETE, PRUNED or FAIL), keyed by Optuna's trial_id.
trial_records = sa.Table(
    "trial_records",
    metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),  # Optuna's trials.trial_id
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False, index=True),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # COMPLETE | PRUNED | FAIL
    sa.Column("reason", sa.Text),  # why a trial was PRUNED or FAIL; NULL when COMPLETE
    # Architecture and its exact parameter count.
    sa.Column("n_params", sa.BigInteger),
    sa.Column("d_model", sa.Integer),
    sa.Column("n_layers", sa.Integer),
    sa.Column("n_heads", sa.Integer),
    sa.Column("d_ff", sa.Integer),
    # Training values actually used (after any adjustment such as an OOM micro-batch halving).
    sa.Column("learning_rate", sa.Float),
    sa.Column("weight_decay", sa.Float),
    sa.Column("dropout", sa.Float),
    sa.Column("warmup_frac", sa.Float),
    sa.Column("batch_size", sa.Integer),
    sa.Column("micro_batch", sa.Integer),
    sa.Column("grad_accum", sa.Integer),
    # Outcome at the best epoch.
    sa.Column("epochs_run", sa.Integer),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("val_auc", sa.Float),
    sa.Column("val_pr_auc", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_brier", sa.Float),
    sa.Column("val_accuracy", sa.Float),
    sa.Column("val_precision", sa.Float),
    sa.Column("val_recall", sa.Float),
    sa.Column("pred_mean", sa.Float),
    sa.Column("pred_std", sa.Float),
    sa.Column("pred_min", sa.Float),
    sa.Column("pred_max", sa.Float),
    sa.Column("val_positive_rate", sa.Float),
    # Cost and provenance.
    sa.Column("duration_s", sa.Float),
    sa.Column("samples_per_s", sa.Float),
    sa.Column("peak_memory_mb", sa.Float),
    sa.Column("worker", sa.Text),
    sa.Column("host", sa.Text),
    sa.Column("device", sa.Text),
    sa.Column("code_version", sa.Text),
    sa.Column("metrics", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # everything else
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# One row per epoch of every trial, written as the epoch ends (so live learning curves are queryable).
trial_epochs = sa.Table(
    "trial_epochs",
    metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("train_loss", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_auc", sa.Float),
    sa.Column("learning_rate", sa.Float),
    sa.Column("seconds", sa.Float),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
