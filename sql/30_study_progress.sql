-- study_progress: one row per study. A study's target counts final outcomes only:
--   finished = complete + pruned + failed, where `failed` excludes FAIL trials that were retried
--   (those are counted in `retried`, and their retry is a WAITING/RUNNING/finished trial of its own).
-- eta_s is rough: the trials still to finish times the mean trial duration, spread over the trials
-- running now (NULL while nothing runs).
CREATE VIEW study_progress AS
SELECT
    s.study_name,
    sp.budget,
    sp.budget_params,
    sp.horizon,
    sp.dataset_name,
    sp.dataset_version,
    sp.objective AS objective_metric,
    lower(d.direction::text) AS direction,
    sp.target_trials,
    c.complete,
    c.pruned,
    c.failed,
    c.retried,
    c.running,
    c.waiting,
    c.complete + c.pruned + c.failed AS finished,
    GREATEST(sp.target_trials - (c.complete + c.pruned + c.failed), 0) AS remaining,
    CASE WHEN d.direction = 'MINIMIZE' THEN c.min_objective ELSE c.max_objective END AS best_objective,
    c.mean_duration_s,
    c.first_started_at,
    c.last_completed_at,
    CASE
        WHEN sp.target_trials - (c.complete + c.pruned + c.failed) <= 0 THEN 0
        WHEN c.running > 0 AND c.mean_duration_s IS NOT NULL
            THEN (sp.target_trials - (c.complete + c.pruned + c.failed)) * c.mean_duration_s / c.running
    END AS eta_s
FROM studies s
LEFT JOIN study_specs sp ON sp.study_id = s.study_id
LEFT JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0
CROSS JOIN LATERAL (
    SELECT
        count(*) FILTER (WHERE ts.state = 'COMPLETE') AS complete,
        count(*) FILTER (WHERE ts.state = 'PRUNED') AS pruned,
        count(*) FILTER (WHERE ts.state = 'FAIL' AND NOT ts.retried) AS failed,
        count(*) FILTER (WHERE ts.retried) AS retried,
        count(*) FILTER (WHERE ts.state = 'RUNNING') AS running,
        count(*) FILTER (WHERE ts.state = 'WAITING') AS waiting,
        max(v.value) FILTER (WHERE ts.state = 'COMPLETE') AS max_objective,
        min(v.value) FILTER (WHERE ts.state = 'COMPLETE') AS min_objective,
        avg(extract(epoch FROM t.datetime_complete - t.datetime_start)::float8)
            FILTER (WHERE ts.state IN ('COMPLETE', 'PRUNED')) AS mean_duration_s,
        min(t.datetime_start) AS first_started_at,
        max(t.datetime_complete) AS last_completed_at
    FROM trial_slots ts
    JOIN trials t ON t.trial_id = ts.trial_id
    LEFT JOIN trial_values v ON v.trial_id = ts.trial_id AND v.objective = 0
    WHERE ts.study_id = s.study_id
) c;
