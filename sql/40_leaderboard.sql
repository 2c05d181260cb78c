-- leaderboard: the best COMPLETE trial of every study that has one, by the study's own direction
-- (highest val_auc, or lowest val_loss). Ties go to the earlier trial. Results of `worker
-- --synthetic` (a sleep and a pseudo-objective) are not results: they are only in
-- leaderboard_synthetic (and leaderboard_all, which has both, marked by `synthetic`).
-- The best attempt per study is found on the narrow ledger rows first; only those are joined to
-- the wide trial_records (fast at 100k trials).
CREATE VIEW leaderboard_all AS
WITH best AS (
    SELECT DISTINCT ON (i.study_name, a.synthetic) a.attempt_id
    FROM attempts a
    JOIN work_items i ON i.item_id = a.item_id AND i.kind = 'search'
    JOIN study_specs sp ON sp.study_name = i.study_name
    WHERE a.state = 'COMPLETE' AND a.value IS NOT NULL
    ORDER BY i.study_name, a.synthetic, CASE WHEN sp.direction = 'minimize' THEN a.value ELSE -a.value END, a.trial_number
)
SELECT
    i.study_name,
    sp.budget,
    sp.budget_params,
    sp.horizon,
    sp.dataset_name,
    sp.dataset_version,
    sp.objective AS objective_metric,
    sp.direction,
    a.value AS objective,
    a.trial_number,
    a.synthetic,
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
    a.worker,
    tr.device,
    a.finished_at AS completed_at
FROM best
JOIN attempts a ON a.attempt_id = best.attempt_id
JOIN work_items i ON i.item_id = a.item_id
JOIN study_specs sp ON sp.study_name = i.study_name
LEFT JOIN trial_records tr ON tr.trial_id = a.trial_id;

CREATE VIEW leaderboard AS SELECT * FROM leaderboard_all WHERE NOT synthetic;
CREATE VIEW leaderboard_synthetic AS SELECT * FROM leaderboard_all WHERE synthetic;
