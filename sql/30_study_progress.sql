-- study_progress: one row per study, from the slot rule (work_counts, kind 'search'):
--   target_trials = slots (the spec's target, plus extensions, minus cancelled slots);
--   finished = complete + pruned + failed, where failed counts FAIL outcomes that were not retried
--   (`retried` counts FAIL attempts whose item went back to waiting).
-- eta_s is rough: the trials still to finish times the mean trial duration, spread over the trials
-- running now (NULL while nothing runs).
CREATE VIEW study_progress AS
WITH attempt_stats AS (
    SELECT
        i.study_name,
        count(*) FILTER (WHERE a.state = 'FAIL' AND (i.attempts_made > a.attempt OR i.state = 'waiting')) AS retried,
        max(a.value) FILTER (WHERE a.state = 'COMPLETE') AS max_objective,
        min(a.value) FILTER (WHERE a.state = 'COMPLETE') AS min_objective,
        avg(extract(epoch FROM a.finished_at - a.claimed_at)::float8) FILTER (WHERE a.state IN ('COMPLETE', 'PRUNED')) AS mean_duration_s,
        min(a.claimed_at) AS first_started_at,
        max(a.finished_at) AS last_completed_at
    FROM attempts a
    JOIN work_items i ON i.item_id = a.item_id
    WHERE i.kind = 'search'
    GROUP BY i.study_name
),
progress AS (
    SELECT
        sp.study_name,
        sp.budget,
        sp.budget_params,
        sp.horizon,
        sp.dataset_name,
        sp.dataset_version,
        sp.objective AS objective_metric,
        sp.direction,
        COALESCE(c.slots, 0) AS target_trials,
        COALESCE(c.complete, 0) AS complete,
        COALESCE(c.pruned, 0) AS pruned,
        COALESCE(c.failed, 0) AS failed,
        COALESCE(s.retried, 0) AS retried,
        COALESCE(c.running, 0) AS running,
        COALESCE(c.waiting, 0) AS waiting,
        COALESCE(c.cancelled, 0) AS cancelled,
        COALESCE(c.finished, 0) AS finished,
        CASE WHEN sp.direction = 'minimize' THEN s.min_objective ELSE s.max_objective END AS best_objective,
        s.mean_duration_s,
        s.first_started_at,
        s.last_completed_at
    FROM study_specs sp
    LEFT JOIN work_counts c ON c.study_name = sp.study_name AND c.kind = 'search'
    LEFT JOIN attempt_stats s ON s.study_name = sp.study_name
)
SELECT
    p.*,
    GREATEST(p.target_trials - p.finished, 0) AS remaining,
    CASE
        WHEN p.target_trials - p.finished <= 0 THEN 0
        WHEN p.running > 0 THEN (p.target_trials - p.finished) * p.mean_duration_s / p.running
    END AS eta_s
FROM progress p;
