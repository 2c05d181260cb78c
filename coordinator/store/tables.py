"""Every table of ours, on one MetaData (Optuna keeps its own tables beside them in the same database).

The project's tables, grouped by the concern that writes them:

- studies and trials: `study_specs` (each study's immutable spec), `trial_records` (one row per
  finished trial, typed columns the read model indexes), `trial_epochs` (one row per epoch);
- data: `series` and `datasets` (versioned, hashed content);
- the ledger: `work_items`, `attempts`, `study_amendments`, `device_leases`;
- the answer: `baselines`, and the evaluation tables (`evaluation_protocols`, `evaluation_runs`,
  `evaluation_results`, `evaluation_baselines`, `scaling_verdicts`);
- models: `checkpoints` (stored best-epoch weights, content addressed).

`coordinator db init` creates and upgrades them through the migrations in
coordinator/store/migrations/; tests/migrations checks that the migrated schema is exactly this
MetaData. The code that reads and writes each table imports it from here, so the metadata always
holds every table and the store never imports the layers above it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = sa.MetaData()

# --- Studies and trials ------------------------------------------------------------------------
# Optuna keeps its own trial rows (state, value, params, intermediate values). Next to them the
# worker writes typed columns, so the sql/ views never parse JSON for the common columns and stay
# fast at 100k trials.

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
    # The best epoch's weights, when the study keeps search checkpoints (create-studies --keep-checkpoints).
    sa.Column("checkpoint_sha256", sa.Text, sa.ForeignKey("checkpoints.sha256")),
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


# --- Data: raw series and dataset versions -----------------------------------------------------

series_table = sa.Table(
    "series",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # file path, 'yfinance' or 'synth seed=... days=...'
    sa.Column("has_volume", sa.Boolean, nullable=False),
    sa.Column("repaired_rows", sa.Integer, nullable=False, server_default="0"),
    sa.Column("content", sa.LargeBinary, nullable=False),  # parquet
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("symbol", "version"),
)

datasets_table = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),  # e.g. spy-a25, spy-a25-vix8
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("tier", sa.Text, nullable=False),  # a25 or a25-vix8
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=False),
    sa.Column("input_columns", JSONB, nullable=False),
    sa.Column("sources", JSONB, nullable=False),  # [{role, symbol, version, sha256, series_id}]
    sa.Column("meta", JSONB, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),  # parquet
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("name", "version"),
)


# --- The ledger --------------------------------------------------------------------------------

work_items = sa.Table(
    "work_items",
    metadata,
    sa.Column("item_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False),
    sa.Column("slot", sa.Integer, nullable=False),  # 1..n within (kind, study)
    sa.Column("state", sa.Text, nullable=False, server_default="waiting"),  # waiting | running | finished | cancelled
    sa.Column("outcome", sa.Text),  # COMPLETE | PRUNED | FAIL once finished
    sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # search: {"params": {...}} when fixed
    sa.Column("attempts_made", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("kind", "study_name", "slot", name="uq_work_items_slot"),
    sa.CheckConstraint("state IN ('waiting', 'running', 'finished', 'cancelled')", name="ck_work_items_state"),
)

# A claim's "lowest waiting slot of (kind, study)" is one probe of this index, in slot order.
sa.Index("ix_work_items_study", work_items.c.study_name, work_items.c.kind, work_items.c.state, work_items.c.slot)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("attempt_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("work_items.item_id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),  # 1, 2, ... within the item
    sa.Column("trial_number", sa.Integer),  # Optuna's trial number (search only)
    sa.Column("trial_id", sa.Integer),  # Optuna's trials.trial_id, looked up in SQL at the claim
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("device", sa.Text),
    sa.Column("code_version", sa.Text),
    sa.Column("sampler_seed", sa.BigInteger),
    sa.Column("synthetic", sa.Boolean, nullable=False, server_default=sa.false()),  # `worker --synthetic`: not a real result
    sa.Column("state", sa.Text, nullable=False, server_default="RUNNING"),  # RUNNING | COMPLETE | PRUNED | FAIL
    sa.Column("reason", sa.Text),
    sa.Column("value", sa.Float),  # the objective (COMPLETE), as told to Optuna
    sa.Column("params", JSONB),  # sampled parameters, re-used by a retry
    sa.Column("architecture", JSONB),  # known at the claim
    sa.Column("n_params", sa.BigInteger),  # known at the claim
    sa.Column("stall_timeout_s", sa.Integer),  # from the study spec, at the claim
    sa.Column("time_limit_s", sa.Integer),
    sa.Column("progress", sa.BigInteger, nullable=False, server_default="0"),  # optimizer steps so far
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("progress_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("late_result", JSONB),  # what a reaped attempt reported afterwards (never counted)
    sa.UniqueConstraint("item_id", "attempt", name="uq_attempts_item_attempt"),
    sa.CheckConstraint("state IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAIL')", name="ck_attempts_state"),
)

sa.Index("ix_attempts_trial_id", attempts.c.trial_id)
sa.Index("ix_attempts_running", attempts.c.item_id, postgresql_where=sa.text("state = 'RUNNING'"))

study_amendments = sa.Table(
    "study_amendments",
    metadata,
    sa.Column("amendment_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), nullable=False, index=True),
    sa.Column("action", sa.Text, nullable=False),  # extend | cancel
    sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# GPU leases: each worker owns one GPU (or one of `share` slots on it); see worker/leases.py.
device_leases = sa.Table(
    "device_leases",
    metadata,
    sa.Column("device", sa.Text, primary_key=True),  # GPU UUID, or '<host>:<index>' when none is known
    sa.Column("slot", sa.Integer, primary_key=True),  # 0 .. share-1: how many workers may share the device
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("device_index", sa.Integer, nullable=False),  # index on its host (nvidia-smi order)
    sa.Column("device_name", sa.Text),
    sa.Column("leased_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# Service locks (coordinator/store/locks.py): one row per name, row-locked to serialise rare steps
# (db init, lease changes, dataset and protocol registration). Created by `db init` before the
# migrations (it serialises them), so no migration creates it.
service_locks = sa.Table("service_locks", metadata, sa.Column("name", sa.Text, primary_key=True))


# --- Baselines ---------------------------------------------------------------------------------

baselines = sa.Table(
    "baselines",
    metadata,
    sa.Column("dataset_name", sa.Text, primary_key=True),
    sa.Column("dataset_version", sa.Integer, primary_key=True),
    sa.Column("horizon", sa.Integer, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),  # one of MODELS
    sa.Column("dataset_sha256", sa.Text, nullable=False),
    sa.Column("n_train", sa.Integer, nullable=False),
    sa.Column("n_val", sa.Integer, nullable=False),
    sa.Column("n_test", sa.Integer, nullable=False),
    sa.Column("val_auc", sa.Float, nullable=False),
    sa.Column("val_pr_auc", sa.Float, nullable=False),
    sa.Column("val_loss", sa.Float, nullable=False),
    sa.Column("val_brier", sa.Float, nullable=False),
    sa.Column("val_accuracy", sa.Float, nullable=False),
    sa.Column("val_precision", sa.Float, nullable=False),
    sa.Column("val_recall", sa.Float, nullable=False),
    sa.Column("val_positive_rate", sa.Float, nullable=False),
    sa.Column("pred_mean", sa.Float, nullable=False),
    sa.Column("pred_std", sa.Float, nullable=False),
    sa.Column("pred_min", sa.Float, nullable=False),
    sa.Column("pred_max", sa.Float, nullable=False),
    sa.Column("test_auc", sa.Float, nullable=False),
    sa.Column("test_loss", sa.Float, nullable=False),
    sa.Column("metrics", JSONB, nullable=False),  # every metric (test_* too), hyperparameters, context
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


# --- The final evaluation ----------------------------------------------------------------------
# evaluation_protocols: per study, its immutable protocol and the top-k configurations frozen when
# it was first evaluated. evaluation_runs: one row per re-trained run with its per-day test
# predictions (for the bootstrap). The other three are recomputed from those two and the baselines
# by `coordinator evaluate`; the views `final_results` and `scaling` read them.

evaluation_protocols = sa.Table(
    "evaluation_protocols",
    metadata,
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), primary_key=True),
    sa.Column("protocol", JSONB, nullable=False),
    sa.Column("protocol_sha256", sa.Text, nullable=False),
    # [{rank, trial_number, trial_id, params, objective, n_params}], rank 1 = best by the study's objective
    sa.Column("configurations", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # the walk-forward folds frozen with the protocol: [Fold.to_dict()]; NULL for the single-period protocol
    sa.Column("folds", JSONB),
)

evaluation_runs = sa.Table(
    "evaluation_runs",
    metadata,
    sa.Column("study_name", sa.Text, sa.ForeignKey("study_specs.study_name"), primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True),
    sa.Column("seed", sa.BigInteger, primary_key=True),
    # the walk-forward fold trained for and scored on (1..F); 0: the single test period of the old protocol
    sa.Column("fold", sa.Integer, primary_key=True, server_default="0"),
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
    sa.Column("checkpoint_sha256", sa.Text, sa.ForeignKey("checkpoints.sha256")),  # the run's best-epoch weights
)

evaluation_results = sa.Table(
    "evaluation_results",
    metadata,
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

evaluation_baselines = sa.Table(
    "evaluation_baselines",
    metadata,
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

scaling_verdicts = sa.Table(
    "scaling_verdicts",
    metadata,
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
    # Walk-forward only (NULL for a single-period verdict): n_test is then the pooled day count.
    sa.Column("n_folds", sa.Integer),
    sa.Column("folds_won", sa.Integer),  # folds where the answer's AUC beats the best baseline's
    sa.Column("spa_pvalue", sa.Float),  # H0: no budget's answer beats the best baseline (log loss)
    sa.Column("mcs", JSONB),  # the 90% model confidence set (model names)
    sa.Column("mde_slope", sa.Float),  # minimum detectable slope per decade (80% power, 5% level)
    sa.Column("mde_vs_baseline", sa.Float),  # minimum detectable difference to the best baseline
)

# Per dataset version, horizon, model (a study's answer configuration, mean over its seeds, or a
# baseline re-fitted per fold) and walk-forward fold: the fold's test period and scores.
evaluation_folds = sa.Table(
    "evaluation_folds",
    metadata,
    sa.Column("dataset_name", sa.Text, primary_key=True),
    sa.Column("dataset_version", sa.Integer, primary_key=True),
    sa.Column("horizon", sa.Integer, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
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

# Per dataset version, horizon and model on the pooled walk-forward days: AUC, per-day losses,
# membership of the 90% model confidence set, calibration.
model_comparisons = sa.Table(
    "model_comparisons",
    metadata,
    sa.Column("dataset_name", sa.Text, primary_key=True),
    sa.Column("dataset_version", sa.Integer, primary_key=True),
    sa.Column("horizon", sa.Integer, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("auc", sa.Float, nullable=False),
    sa.Column("log_loss", sa.Float, nullable=False),
    sa.Column("brier", sa.Float, nullable=False),
    sa.Column("brier_reliability", sa.Float, nullable=False),  # the Brier score's calibration part
    sa.Column("in_mcs", sa.Boolean, nullable=False),
    sa.Column("mcs_pvalue", sa.Float),
    sa.Column("reliability", JSONB, nullable=False),  # [{mean_predicted, observed_rate, count}], quantile bins
    sa.Column("protocol_sha256", sa.Text, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# --- Checkpoints -------------------------------------------------------------------------------
# One row per stored model file (coordinator/store/artifacts.py), keyed by the sha256 of its bytes:
# the same content is one record and one stored copy. evaluation_runs and trial_records point at it.
checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("artifact_id", sa.Text, nullable=False, unique=True),  # Optuna's artifact id in `store`
    sa.Column("store", sa.Text, nullable=False),  # file:///... or s3://bucket/prefix, never credentials
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("n_params", sa.BigInteger, nullable=False),
    sa.Column("seen_through", sa.Date, nullable=False),  # the last day whose data shaped the weights
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
