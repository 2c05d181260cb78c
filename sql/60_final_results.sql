-- final_results: one row per evaluated configuration (a study's top-k trial re-trained with the
-- evaluation protocol's fresh seeds and scored once on the test split), with 95-percent intervals from a
-- block bootstrap over test days that resamples the seeds too. `chosen` marks the configuration that
-- answers for its study (best mean validation objective over the seeds: chosen on validation, never
-- on test). vs_best_baseline is test AUC minus the best baseline's (by validation AUC), paired.
-- Written by `coordinator evaluate` (tables evaluation_results, evaluation_runs, evaluation_protocols).
DROP VIEW IF EXISTS final_results CASCADE;
CREATE VIEW final_results AS
SELECT
    sp.dataset_name,
    sp.dataset_version,
    sp.horizon,
    sp.budget,
    sp.budget_params,
    r.study_name,
    r.rank,
    r.chosen,
    r.trial_number,
    r.n_params,
    r.n_seeds,
    sp.objective AS objective_metric,
    r.val_objective_mean,
    r.test_auc,
    r.test_auc_sd,
    r.test_auc_low,
    r.test_auc_high,
    r.test_pr_auc,
    r.test_pr_auc_low,
    r.test_pr_auc_high,
    r.best_baseline,
    r.vs_best_baseline,
    r.vs_best_baseline_low,
    r.vs_best_baseline_high,
    r.under_trained_runs,
    runs.mean_best_epoch,
    runs.max_epochs,
    r.block_length,
    r.replicates,
    r.protocol_sha256,
    r.computed_at
FROM evaluation_results r
JOIN study_specs sp ON sp.study_name = r.study_name
LEFT JOIN LATERAL (
    SELECT avg(e.best_epoch)::float8 AS mean_best_epoch, max(e.max_epochs) AS max_epochs
    FROM evaluation_runs e
    WHERE e.study_name = r.study_name AND e.rank = r.rank AND e.protocol_sha256 = r.protocol_sha256
) runs ON true;
