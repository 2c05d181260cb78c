-- The study's claim lock (see claim_lock_study.sql), waited for when every study with room is
-- being claimed: a queue on the row lock instead of polling. The caller bounds the wait with
-- SET LOCAL lock_timeout, so a stopping worker is never stuck here.
SELECT study_name FROM study_specs WHERE study_name = :study_name FOR NO KEY UPDATE
