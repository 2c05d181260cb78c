-- The read model is rebuilt from scratch on every `coordinator db init`: dropping first lets a view
-- change its columns between versions (CREATE OR REPLACE VIEW cannot rename or remove columns).
-- Only views are dropped here; no data lives in them. The files after this one recreate them.
DROP VIEW IF EXISTS learning_curves, leaderboard, study_progress, trial_results, trial_slots CASCADE;
