-- study_progress: one row per study. A study's target counts final outcomes only:
--   finished = complete + pruned + failed, where `failed` excludes FAIL trials that were retried
--   (those are counted in `retried`, and their retry is a WAITING/RUNNING/finished trial of its own).
-- eta_s is rough: the trials still to finish times the mean trial duration, spread over the trials
-- running now (NULL while nothing runs).
CREATE VIEW study_progress AS
WITH counts AS (
    SELECT
        ts.study_id,
        count(*) FILTER (WHERE ts.state = 'COMPLETE') AS complete,
        count(*) FILTER (WHERE ts.state = 'PRUNED') AS pruned,
        count(*) FILTER (WHERE ts.state = 'FAIL' AND NOT ts.retried) AS failed,
        count(*) FILTER (WHERE ts.retried) AS retried,
        count(*) FILTER (WHERE ts.state = 'RUNNING') AS running,
        count(*) FILTER (WHERE ts.state = 'WAITING') AS waiting,
        max(v.value) FILTER (WHERE ts.state = 'COMPLETE') AS max_objective,
        min(v.value) FILTER (WHERE ts.state = 'COMPLETE') AS min_objective,
        avg(extract(epoch FROM ts.completed_at - ts.started_at)::float8)
            FILTER (WHERE ts.state IN ('COMPLETE', 'PRUNED')) AS mean_duration_s,
        min(ts.started_at) AS first_started_at,
        max(ts.completed_at) AS last_completed_at
    FROM trial_slots ts
    LEFT JOIN trial_values v ON v.trial_id = ts.trial_id AND v.objective = 0
    GROUP BY ts.study_id
),
progress AS (
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
        COALESCE(c.complete, 0) AS complete,
        COALESCE(c.pruned, 0) AS pruned,
        COALESCE(c.failed, 0) AS failed,
        COALESCE(c.retried, 0) AS retried,
        COALESCE(c.running, 0) AS running,
        COALESCE(c.waiting, 0) AS waiting,
        COALESCE(c.complete + c.pruned + c.failed, 0) AS finished,
        CASE WHEN d.direction = 'MINIMIZE' THEN c.min_objective ELSE c.max_objective END AS best_objective,
        c.mean_duration_s,
        c.first_started_at,
        c.last_completed_at
    FROM studies s
    LEFT JOIN study_specs sp ON sp.study_id = s.study_id
    LEFT JOIN study_directions d ON d.study_id = s.study_id AND d.objective = 0
    LEFT JOIN counts c ON c.study_id = s.study_id
)
SELECT
    p.*,
    GREATEST(p.target_trials - p.finished, 0) AS remaining,
    CASE
        WHEN p.target_trials - p.finished <= 0 THEN 0
        WHEN p.running > 0 THEN (p.target_trials - p.finished) * p.mean_duration_s / p.running
    END AS eta_s
FROM progress p;
