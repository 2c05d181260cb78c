-- fold_results: the walk-forward evaluation fold by fold. One row per dataset version, horizon,
-- model and test fold: a study's answer configuration (its AUC is the mean over its seeds) or a
-- baseline re-fitted for the fold, each trained on the days before the fold only and scored once on
-- it. `beats_best_baseline` compares a study's fold AUC with the best baseline's (chosen on
-- validation) on the same fold. Written by `coordinator evaluate` (table evaluation_folds).
DROP VIEW IF EXISTS fold_results CASCADE;
CREATE VIEW fold_results AS
SELECT
    f.dataset_name,
    f.dataset_version,
    f.horizon,
    f.kind,
    f.model,
    sp.budget,
    sp.budget_params,
    f.fold,
    f.test_start,
    f.test_end,
    f.n_days,
    f.auc,
    f.log_loss,
    f.brier,
    CASE WHEN f.kind = 'study' THEN f.auc > b.auc END AS beats_best_baseline,
    v.best_baseline,
    f.protocol_sha256,
    f.computed_at
FROM evaluation_folds f
LEFT JOIN study_specs sp ON f.kind = 'study' AND sp.study_name = f.model
LEFT JOIN scaling_verdicts v
    ON v.dataset_name = f.dataset_name AND v.dataset_version = f.dataset_version AND v.horizon = f.horizon
LEFT JOIN evaluation_folds b
    ON b.dataset_name = f.dataset_name AND b.dataset_version = f.dataset_version AND b.horizon = f.horizon
   AND b.fold = f.fold AND b.model = v.best_baseline;
