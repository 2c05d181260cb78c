-- Indexes the ledger needs on Optuna's tables (Optuna itself only indexes trials.study_id).
-- The reaper looks for trials Optuna still thinks are RUNNING.
CREATE INDEX IF NOT EXISTS ix_trials_study_state ON trials (study_id, state);
-- A claim looks its new trial up by study and number.
CREATE INDEX IF NOT EXISTS ix_trials_study_number ON trials (study_id, number);
