-- trial_slots: every Optuna trial with its state and whether a FAIL was superseded by a retry.
--
-- Optuna's RetryHeartbeatStaleTrialCallback re-enqueues a failed trial as a new WAITING trial whose
-- system attribute `retry_history` lists every earlier attempt (a JSON array of trial numbers).
-- A FAIL trial named in any such list was retried: it does not use up a slot of the study's
-- target. A FAIL trial nobody retried (retries exhausted, or a trial that failed for good) does.
CREATE VIEW trial_slots AS
WITH retried AS (
    SELECT DISTINCT t.study_id, attempt.number::int AS number
    FROM trial_system_attributes a
    JOIN trials t ON t.trial_id = a.trial_id
    CROSS JOIN LATERAL jsonb_array_elements_text(a.value_json::jsonb) AS attempt(number)
    WHERE a.key = 'retry_history'
)
SELECT
    t.trial_id,
    t.study_id,
    t.number AS trial_number,
    t.state::text AS state,
    (t.state = 'FAIL' AND r.number IS NOT NULL) AS retried,
    t.datetime_start AS started_at,
    t.datetime_complete AS completed_at
FROM trials t
LEFT JOIN retried r ON r.study_id = t.study_id AND r.number = t.number;


-- trial_results: one row per trial (RUNNING and WAITING included), everything a researcher filters
-- or plots by. Finished trials take their metrics, architecture and training values from
-- trial_records (typed columns the worker writes); timestamps and state come from Optuna.
CREATE VIEW trial_results AS
SELECT
    s.study_name,
    sp.budget,
    sp.budget_params,
    sp.horizon,
    sp.dataset_name,
    sp.dataset_version,
    ts.trial_number,
    ts.trial_id,
    ts.state,
    tr.reason,
    ts.retried,
    (rh.value_json::jsonb ->> -1)::int AS retry_of,  -- the attempt this trial re-runs
    sp.objective AS objective_metric,
    lower(d.direction::text) AS direction,
    v.value AS objective,  -- the trial's value in Optuna (for PRUNED: its last reported value)
    tr.val_auc,
    tr.val_loss,
    tr.val_pr_auc,
    tr.val_brier,
    tr.val_accuracy,
    tr.val_precision,
    tr.val_recall,
    tr.val_positive_rate,
    tr.pred_mean,
    tr.pred_std,
    tr.pred_min,
    tr.pred_max,
    tr.n_params,
    tr.n_params::float8 / NULLIF(sp.budget_params, 0) AS budget_ratio,
    tr.d_model,
    tr.n_layers,
    tr.n_heads,
    tr.d_ff,
    tr.learning_rate,
    tr.weight_decay,
    tr.dropout,
    tr.warmup_frac,
    tr.batch_size,
    tr.micro_batch,
    tr.grad_accum,
    tr.epochs_run,
    tr.best_epoch,
    COALESCE(tr.duration_s, extract(epoch FROM ts.completed_at - ts.started_at)::float8) AS duration_s,
    tr.samples_per_s,
    tr.peak_memory_mb,
    COALESCE(tr.worker, live.worker) AS worker,
    COALESCE(tr.host, live.host) AS host,
    COALESCE(tr.device, live.device) AS device,
    COALESCE(tr.code_version, live.code_version) AS code_version,
    ts.started_at,
    ts.completed_at,
    tr.metrics
FROM trial_slots ts
JOIN studies s ON s.study_id = ts.study_id
LEFT JOIN study_specs sp ON sp.study_id = ts.study_id
LEFT JOIN study_directions d ON d.study_id = ts.study_id AND d.objective = 0
LEFT JOIN trial_values v ON v.trial_id = ts.trial_id AND v.objective = 0
LEFT JOIN trial_records tr ON tr.trial_id = ts.trial_id
LEFT JOIN trial_system_attributes rh ON rh.trial_id = ts.trial_id AND rh.key = 'retry_history'
-- A trial without a record yet (RUNNING) says who runs it in the user attributes set at its claim.
LEFT JOIN LATERAL (
    SELECT
        max(a.value_json::jsonb #>> '{}') FILTER (WHERE a.key = 'worker') AS worker,
        max(a.value_json::jsonb #>> '{}') FILTER (WHERE a.key = 'host') AS host,
        max(a.value_json::jsonb #>> '{}') FILTER (WHERE a.key = 'device') AS device,
        max(a.value_json::jsonb #>> '{}') FILTER (WHERE a.key = 'code_version') AS code_version
    FROM trial_user_attributes a
    WHERE tr.trial_id IS NULL AND a.trial_id = ts.trial_id AND a.key IN ('worker', 'host', 'device', 'code_version')
) live ON true;
