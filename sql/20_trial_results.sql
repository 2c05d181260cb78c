-- trial_results: one row per attempt of a `search` item (an Optuna trial), plus one row per waiting
-- item (state WAITING, no trial number yet): everything a researcher filters or plots by.
-- Provenance, architecture and parameter count come from the attempt (known from its claim on, so
-- RUNNING trials show them); metrics and training values from trial_records once it has finished.
-- `retried`: a FAIL attempt whose item was retried (it does not use up a slot; its retry does).
CREATE VIEW trial_results AS
WITH runs AS (
    SELECT
        i.study_name, i.item_id, i.slot, a.attempt_id, a.attempt, a.trial_number, a.trial_id, a.state, a.reason,
        (a.state = 'FAIL' AND (i.attempts_made > a.attempt OR i.state = 'waiting')) AS retried,
        prev.trial_number AS retry_of,
        a.value, a.n_params AS claimed_n_params, a.architecture, a.worker, a.host, a.device, a.code_version, a.synthetic,
        a.progress, a.claimed_at, a.heartbeat_at, a.finished_at, a.late_result
    FROM attempts a
    JOIN work_items i ON i.item_id = a.item_id
    LEFT JOIN attempts prev ON prev.item_id = a.item_id AND prev.attempt = a.attempt - 1
    WHERE i.kind = 'search'
    UNION ALL
    SELECT
        i.study_name, i.item_id, i.slot, NULL, i.attempts_made + 1, NULL, NULL, 'WAITING', NULL,
        false,
        prev.trial_number,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, false,
        0, NULL, NULL, NULL, NULL
    FROM work_items i
    LEFT JOIN attempts prev ON prev.item_id = i.item_id AND prev.attempt = i.attempts_made
    WHERE i.kind = 'search' AND i.state = 'waiting'
)
SELECT
    r.study_name,
    sp.budget,
    sp.budget_params,
    sp.horizon,
    sp.dataset_name,
    sp.dataset_version,
    r.trial_number,
    r.trial_id,
    r.item_id,
    r.slot,
    r.attempt_id,
    r.attempt,
    r.state,
    COALESCE(tr.reason, r.reason) AS reason,
    r.retried,
    r.retry_of,  -- the trial this one re-runs (same parameters)
    sp.objective AS objective_metric,
    sp.direction,
    r.value AS objective,
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
    COALESCE(tr.n_params, r.claimed_n_params) AS n_params,
    COALESCE(tr.n_params, r.claimed_n_params)::float8 / NULLIF(sp.budget_params, 0) AS budget_ratio,
    COALESCE(tr.d_model, (r.architecture ->> 'd_model')::int) AS d_model,
    COALESCE(tr.n_layers, (r.architecture ->> 'n_layers')::int) AS n_layers,
    COALESCE(tr.n_heads, (r.architecture ->> 'n_heads')::int) AS n_heads,
    COALESCE(tr.d_ff, (r.architecture ->> 'd_ff')::int) AS d_ff,
    tr.learning_rate,
    tr.weight_decay,
    tr.dropout,
    tr.warmup_frac,
    tr.batch_size,
    tr.micro_batch,
    tr.grad_accum,
    tr.epochs_run,
    tr.best_epoch,
    COALESCE(tr.duration_s, extract(epoch FROM r.finished_at - r.claimed_at)::float8) AS duration_s,
    tr.samples_per_s,
    tr.peak_memory_mb,
    r.worker,
    r.host,
    COALESCE(tr.device, r.device) AS device,
    r.code_version,
    r.synthetic,
    r.progress,
    r.claimed_at AS started_at,
    r.finished_at AS completed_at,
    r.heartbeat_at,
    r.late_result,
    tr.metrics
FROM runs r
JOIN study_specs sp ON sp.study_name = r.study_name
LEFT JOIN trial_records tr ON tr.trial_id = r.trial_id;
