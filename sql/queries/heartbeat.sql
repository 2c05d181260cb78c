-- A running attempt is alive: database-clock heartbeat, and the progress counter (optimizer steps);
-- progress_at moves only when the counter does. No row back: the attempt is no longer running.
UPDATE attempts
SET heartbeat_at = now(),
    progress_at = CASE WHEN :progress > progress THEN now() ELSE progress_at END,
    progress = GREATEST(progress, :progress)
WHERE attempt_id = :attempt_id AND state = 'RUNNING'
RETURNING attempt_id
