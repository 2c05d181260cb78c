-- leaderboard: the best COMPLETE trial of every study that has one, by the study's own direction
-- (highest val_auc, or lowest val_loss). Ties go to the earlier trial.
CREATE VIEW leaderboard AS
SELECT DISTINCT ON (r.study_name)
    r.study_name,
    r.budget,
    r.budget_params,
    r.horizon,
    r.dataset_name,
    r.dataset_version,
    r.objective_metric,
    r.direction,
    r.objective,
    r.trial_number,
    r.val_auc,
    r.val_pr_auc,
    r.val_loss,
    r.val_brier,
    r.pred_std,
    r.n_params,
    r.budget_ratio,
    r.d_model,
    r.n_layers,
    r.n_heads,
    r.d_ff,
    r.learning_rate,
    r.weight_decay,
    r.dropout,
    r.batch_size,
    r.epochs_run,
    r.best_epoch,
    r.duration_s,
    r.worker,
    r.device,
    r.completed_at
FROM trial_results r
WHERE r.state = 'COMPLETE' AND r.objective IS NOT NULL
ORDER BY r.study_name, CASE WHEN r.direction = 'minimize' THEN r.objective ELSE -r.objective END, r.trial_number;
