-- Finish a running attempt (conditional: a reaped attempt is not running any more, and then
-- nothing changes here) and settle its item: finished with this outcome, or back to waiting for a
-- retry with the same parameters. Returns the attempt's row when it was still running.
WITH attempt AS (
    UPDATE attempts
    SET state = :state, reason = :reason, value = :value, finished_at = clock_timestamp()
    WHERE attempt_id = :attempt_id AND state = 'RUNNING'
    RETURNING attempt_id, item_id, attempt, trial_number, trial_id, params, worker, host, device, code_version, sampler_seed,
              synthetic, architecture, n_params
), item AS (
    UPDATE work_items i
    SET state = CASE WHEN :retry THEN 'waiting' ELSE 'finished' END,
        outcome = CASE WHEN :retry THEN NULL ELSE :state END,
        payload = CASE WHEN :retry AND a.params IS NOT NULL THEN i.payload || jsonb_build_object('params', a.params) ELSE i.payload END,
        updated_at = now()
    FROM attempt a
    WHERE i.item_id = a.item_id
    RETURNING i.study_name, i.kind
)
SELECT a.*, item.study_name, item.kind FROM attempt a, item
