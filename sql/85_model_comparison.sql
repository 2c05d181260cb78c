-- model_comparison: every model of a dataset version and horizon on the pooled walk-forward test
-- days (each day predicted once, by the model trained before its fold): each budget's answer
-- configuration and each baseline, with its pooled AUC, mean per-day log loss and Brier score, the
-- Brier score's calibration part, its membership of the 90-percent model confidence set (log loss) and
-- the horizon's SPA p-value (H0: no budget beats the best baseline, chosen on validation).
-- `reliability` is the calibration curve: [{mean_predicted, observed_rate, count}] per quantile bin.
DROP VIEW IF EXISTS model_comparison CASCADE;
CREATE VIEW model_comparison AS
SELECT
    m.dataset_name,
    m.dataset_version,
    m.horizon,
    m.kind,
    m.model,
    sp.budget,
    sp.budget_params,
    m.auc,
    m.log_loss,
    m.brier,
    m.brier_reliability,
    m.in_mcs,
    m.mcs_pvalue,
    (m.model = v.best_baseline) AS best_baseline,
    v.spa_pvalue,
    v.n_test AS n_pooled_days,
    v.n_folds,
    m.reliability,
    m.protocol_sha256,
    m.computed_at
FROM model_comparisons m
LEFT JOIN study_specs sp ON m.kind = 'study' AND sp.study_name = m.model
LEFT JOIN scaling_verdicts v
    ON v.dataset_name = m.dataset_name AND v.dataset_version = m.dataset_version AND v.horizon = m.horizon;
