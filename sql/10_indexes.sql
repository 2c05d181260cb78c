-- Indexes the read model needs on Optuna's tables (Optuna itself only indexes trials.study_id).
-- With them every view answers in well under a second at 100k trials (bench/views.py).

-- Per-study counts by state (study_progress) and the claim query's "how many are left" count.
CREATE INDEX IF NOT EXISTS ix_trials_study_state ON trials (study_id, state);
-- Looking a trial up by its study and number (learning_curves, retry bookkeeping).
CREATE INDEX IF NOT EXISTS ix_trials_study_number ON trials (study_id, number);
-- Retried trials carry Optuna's `retry_history` system attribute; only those rows are indexed.
CREATE INDEX IF NOT EXISTS ix_trial_system_attributes_retry
    ON trial_system_attributes (trial_id) WHERE key = 'retry_history';
