-- Heartbeat for every running attempt this worker process claimed (since it started), while a claim
-- is on its way back to it: a claim that committed before a stall or a dropped connection stays alive
-- until the worker resumes it (claim_next's `resume`), instead of being reaped as lost.
UPDATE attempts
SET heartbeat_at = now()
WHERE state = 'RUNNING' AND worker = :worker AND host = :host AND claimed_at >= :since
