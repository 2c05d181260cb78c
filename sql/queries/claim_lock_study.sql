-- The study's claim lock: a row lock on its study_specs row, held until the claim commits, so the
-- asks of one study happen one at a time (an enqueued retry goes to the claim that enqueued it).
-- A row lock needs UPDATE on study_specs, so the read-only role can never hold it; NO KEY keeps
-- foreign-key inserts (work_items, trial_records) unblocked; SKIP LOCKED never waits.
SELECT study_name FROM study_specs WHERE study_name = :study_name FOR NO KEY UPDATE SKIP LOCKED
