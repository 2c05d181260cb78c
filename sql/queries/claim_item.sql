-- The lowest waiting slot of (kind, study) that no other claim holds; locked until the claim commits.
SELECT item_id, slot, payload, attempts_made
FROM work_items
WHERE kind = :kind AND study_name = :study_name AND state = 'waiting'
ORDER BY slot
LIMIT 1
FOR UPDATE SKIP LOCKED
