-- What the claim sampled: parameters (re-used by a retry), architecture and exact parameter count.
UPDATE attempts
SET params = CAST(:params AS jsonb), architecture = CAST(:architecture AS jsonb), n_params = :n_params
WHERE attempt_id = :attempt_id
