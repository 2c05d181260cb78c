-- Running attempts to fail now, by the database clock only, each with its reason:
--   lost     no heartbeat for the grace period (judged only once the server itself has been up for
--            a grace period: after a restart every worker gets that long to reconnect and beat);
--   stalled  heartbeats arrive but the progress counter has not moved for the attempt's stall timeout;
--   timeout  running for longer than the attempt's wall-clock limit.
-- Locked with SKIP LOCKED: a reaper never waits, and two reapers never fail one attempt twice.
SELECT a.attempt_id, a.item_id, a.attempt, a.trial_number, a.worker,
       CASE
           WHEN a.heartbeat_at < now() - make_interval(secs => :grace)
                AND pg_postmaster_start_time() < now() - make_interval(secs => :grace)
               THEN format('lost: no heartbeat for over %s s (%s)', :grace, a.worker)
           WHEN a.progress_at < now() - make_interval(secs => a.stall_timeout_s)
               THEN format('stalled: no optimizer step for %s s', a.stall_timeout_s)
           ELSE format('timeout after %s s', a.time_limit_s)
       END AS reason
FROM attempts a
JOIN work_items i ON i.item_id = a.item_id
WHERE a.state = 'RUNNING'
  AND i.study_name = ANY(:names)
  AND (
      (a.heartbeat_at < now() - make_interval(secs => :grace)
       AND pg_postmaster_start_time() < now() - make_interval(secs => :grace))
      OR a.progress_at < now() - make_interval(secs => a.stall_timeout_s)
      OR a.claimed_at < now() - make_interval(secs => a.time_limit_s)
  )
ORDER BY a.attempt_id
FOR UPDATE OF a SKIP LOCKED
