-- An attempt this very outcome already finished: the retry of a finish whose COMMIT went through but
-- whose answer was lost with the connection. Same columns as finish_attempt; no row for an attempt
-- that a reaper failed (its reason is the reaper's) or that is still running.
SELECT a.attempt_id, a.item_id, a.attempt, a.trial_number, a.trial_id, a.params, a.worker, a.host, a.device,
       a.code_version, a.sampler_seed, a.synthetic, a.architecture, a.n_params, i.study_name, i.kind
FROM attempts a
JOIN work_items i ON i.item_id = a.item_id
WHERE a.attempt_id = :attempt_id AND a.state = :state
  AND a.value IS NOT DISTINCT FROM CAST(:value AS double precision)
  AND a.reason IS NOT DISTINCT FROM CAST(:reason AS text)
  AND a.late_result IS NULL
