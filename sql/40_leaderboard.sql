-- leaderboard: the best COMPLETE trial of every study that has one, by the study's own direction
-- (highest val_auc, or lowest val_loss). Ties go to the earlier trial.
-- The best value per study is found with one hash aggregate over Optuna's narrow tables, so only
-- one row per study is joined to the wide trial_records (fast at 100k trials, no big sort).
CREATE VIEW leaderboard AS
WITH best_value AS (
    SELECT
        t.study_id,
        CASE WHEN d.direction = 'MINIMIZE' THEN min(v.value) ELSE max(v.value) END AS value
    FROM trials t
    JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
    LEFT JOIN study_directions d ON d.study_id = t.study_id AND d.objective = 0
    WHERE t.state = 'COMPLETE'
    GROUP BY t.study_id, d.direction
),
best AS (
    SELECT DISTINCT ON (t.study_id) t.study_id, t.trial_id, t.number, v.value
    FROM best_value b
    JOIN trial_values v ON v.value = b.value AND v.objective = 0
    JOIN trials t ON t.trial_id = v.trial_id AND t.study_id = b.study_id AND t.state = 'COMPLETE'
    ORDER BY t.study_id, t.number
)
SELECT
    s.study_name,
    sp.budget,
    sp.budget_params,
    sp.horizon,
    sp.dataset_name,
    sp.dataset_version,
    sp.objective AS objective_metric,
    lower(d.direction::text) AS direction,
    best.value AS objective,
    best.number AS trial_number,
    tr.val_auc,
    tr.val_pr_auc,
    tr.val_loss,
    tr.val_brier,
    tr.pred_std,
    tr.n_params,
    tr.n_params::float8 / NULLIF(sp.budget_params, 0) AS budget_ratio,
    tr.d_model,
    tr.n_layers,
    tr.n_heads,
    tr.d_ff,
    tr.learning_rate,
    tr.weight_decay,
    tr.dropout,
    tr.batch_size,
    tr.epochs_run,
    tr.best_epoch,
    tr.duration_s,
    tr.worker,
    tr.device,
    t.datetime_complete AS completed_at
FROM best
JOIN studies s ON s.study_id = best.study_id
JOIN trials t ON t.trial_id = best.trial_id
LEFT JOIN study_specs sp ON sp.study_id = best.study_id
LEFT JOIN study_directions d ON d.study_id = best.study_id AND d.objective = 0
LEFT JOIN trial_records tr ON tr.trial_id = best.trial_id;
