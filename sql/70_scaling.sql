-- scaling: the answer per dataset version and horizon. The slope is the least-squares change of test
-- AUC per decade of real parameters across the studies' chosen configurations; the difference is the
-- best-on-validation configuration's test AUC minus the best baseline's; both with 95-percent paired
-- block-bootstrap intervals (the same resampled test days for every model). `sentence` says it in words.
-- best_baseline_* are that baseline's own test AUC and interval (the band in the report's figure).
-- Walk-forward protocol: the test days are pooled over n_folds folds (each day predicted once, by the
-- model trained before its fold); folds_won counts the folds where the answer's AUC beats the best
-- baseline's; spa_pvalue tests "some budget beats the best baseline" (log loss), mcs is the 90-percent model
-- confidence set; mde_* are the smallest slope per decade and difference to the baseline the
-- experiment had 80-percent power to detect at the 5-percent level. protocol 'single-period': a study evaluated
-- before walk-forward (one test period; those columns are NULL).
DROP VIEW IF EXISTS scaling CASCADE;
CREATE VIEW scaling AS
SELECT
    v.dataset_name,
    v.dataset_version,
    v.horizon,
    v.n_studies,
    v.slope_per_decade,
    v.slope_low,
    v.slope_high,
    (v.slope_low > 0) AS gains_with_size,
    v.answer_study,
    v.answer_test_auc,
    v.best_baseline,
    b.test_auc AS best_baseline_test_auc,
    b.test_auc_low AS best_baseline_test_auc_low,
    b.test_auc_high AS best_baseline_test_auc_high,
    v.vs_best_baseline,
    v.vs_best_baseline_low,
    v.vs_best_baseline_high,
    v.sentence,
    v.notes,
    CASE WHEN v.n_folds IS NULL THEN 'single-period' ELSE 'walk-forward' END AS protocol,
    v.n_folds,
    v.n_test AS n_pooled_days,
    v.folds_won,
    v.spa_pvalue,
    v.mcs,
    v.mde_slope,
    v.mde_vs_baseline,
    v.n_test,
    v.method,
    v.block_length,
    v.replicates,
    v.protocol_sha256,
    v.computed_at
FROM scaling_verdicts v
LEFT JOIN evaluation_baselines b
    ON b.dataset_name = v.dataset_name AND b.dataset_version = v.dataset_version
   AND b.horizon = v.horizon AND b.model = v.best_baseline;
