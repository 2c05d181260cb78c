-- The running attempt this worker claimed most recently: after a connection drop during a claim, the
-- claim may have committed without its answer reaching the worker; it resumes that attempt instead
-- of claiming a second item and leaving the first to be reaped while its worker lives. Only attempts
-- claimed since this worker process started: a predecessor with the same worker id is not resumed.
SELECT a.attempt_id, a.attempt, a.trial_number, a.trial_id, a.sampler_seed, a.params,
       i.item_id, i.kind, i.study_name, i.slot, i.payload
FROM attempts a
JOIN work_items i ON i.item_id = a.item_id
WHERE a.state = 'RUNNING' AND a.worker = :worker AND a.host = :host AND a.claimed_at >= :since
  AND i.study_name = ANY(:names)
ORDER BY a.attempt_id DESC
LIMIT 1
