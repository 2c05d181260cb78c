-- Optuna trials of the selected studies that no running attempt accounts for: still RUNNING in
-- Optuna (a claim died between Optuna's ask and its own COMMIT, or an attempt was finished in the
-- ledger by a process that died before telling Optuna), or still WAITING (a claim died between
-- enqueue_trial and ask). The reaper makes Optuna agree with the ledger.
SELECT s.study_name, t.number, t.state::text AS optuna_state, a.state AS attempt_state, a.value,
       r.metrics -> 'objective_values' AS objective_values
FROM trials t
JOIN studies s ON s.study_id = t.study_id
LEFT JOIN attempts a ON a.trial_id = t.trial_id
LEFT JOIN trial_records r ON r.trial_id = t.trial_id
WHERE s.study_name = ANY(:names) AND t.state IN ('RUNNING', 'WAITING') AND (a.attempt_id IS NULL OR a.state <> 'RUNNING')
