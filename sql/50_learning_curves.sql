-- learning_curves: one row per epoch of every trial (written as each epoch ends, so curves of
-- RUNNING trials are visible too). best_epoch is the trial's reported epoch once it has finished.
CREATE VIEW learning_curves AS
SELECT
    s.study_name,
    t.number AS trial_number,
    e.trial_id,
    t.state::text AS state,
    e.epoch,
    e.train_loss,
    e.val_loss,
    e.val_auc,
    e.learning_rate,
    e.seconds,
    tr.best_epoch,
    e.recorded_at
FROM trial_epochs e
JOIN trials t ON t.trial_id = e.trial_id
JOIN studies s ON s.study_id = t.study_id
LEFT JOIN trial_records tr ON tr.trial_id = e.trial_id;
