-- work_counts: the slot rule, defined once. Every work item that is not cancelled is a slot of its
-- (kind, study) target; its state says whether it waits, runs or has finished (COMPLETE, PRUNED, or
-- FAIL for good: a retried attempt puts its item back to waiting). `claims` counts attempts.
-- Used by every claim (fairness and room) and by study_progress.
CREATE VIEW work_counts AS
SELECT
    i.kind,
    i.study_name,
    count(*) FILTER (WHERE i.state <> 'cancelled') AS slots,
    count(*) FILTER (WHERE i.state = 'waiting') AS waiting,
    count(*) FILTER (WHERE i.state = 'running') AS running,
    count(*) FILTER (WHERE i.state = 'finished') AS finished,
    count(*) FILTER (WHERE i.state = 'cancelled') AS cancelled,
    count(*) FILTER (WHERE i.outcome = 'COMPLETE') AS complete,
    count(*) FILTER (WHERE i.outcome = 'PRUNED') AS pruned,
    count(*) FILTER (WHERE i.outcome = 'FAIL') AS failed,
    COALESCE(sum(i.attempts_made), 0)::bigint AS claims
FROM work_items i
GROUP BY i.kind, i.study_name;
