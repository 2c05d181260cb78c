-- learning_curves: one row per epoch of every trial (written as each epoch ends, so curves of
-- RUNNING trials are visible too). best_epoch is the trial's reported epoch once it has finished.
CREATE VIEW learning_curves AS
SELECT
    i.study_name,
    a.trial_number,
    e.trial_id,
    a.state,
    e.epoch,
    e.train_loss,
    e.val_loss,
    e.val_auc,
    e.learning_rate,
    e.seconds,
    tr.best_epoch,
    e.recorded_at
FROM trial_epochs e
JOIN attempts a ON a.trial_id = e.trial_id
JOIN work_items i ON i.item_id = a.item_id
LEFT JOIN trial_records tr ON tr.trial_id = e.trial_id;
