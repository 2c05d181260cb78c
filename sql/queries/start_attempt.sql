-- One claim's writes: the attempt with everything known at the claim, and its item marked running.
-- The Optuna trial_id is looked up by study and number (Optuna's own tables are only read).
WITH attempt AS (
    INSERT INTO attempts (item_id, attempt, trial_number, trial_id, worker, host, device, code_version, sampler_seed,
                          synthetic, params, architecture, n_params, stall_timeout_s, time_limit_s)
    VALUES (:item_id, :attempt, :trial_number,
            (SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id
             WHERE s.study_name = :study_name AND t.number = :trial_number),
            :worker, :host, :device, :code_version, :sampler_seed, :synthetic, CAST(:params AS jsonb), CAST(:architecture AS jsonb), :n_params,
            :stall_timeout_s, :time_limit_s)
    RETURNING attempt_id, trial_id
), item AS (
    UPDATE work_items SET state = 'running', attempts_made = :attempt, updated_at = now()
    WHERE item_id = :item_id
)
SELECT attempt_id, trial_id FROM attempt
