-- The (kind, study) pairs that have a waiting item, the one furthest behind its target first.
-- Items are claimed in slot order, so the lowest waiting slot over the last slot is how far a study
-- has got (a re-queued retry puts it back, and it goes first). Two index probes per study, however
-- many items it has: this runs before every claim. The counts themselves are work_counts'.
SELECT k.kind, s.study_name, w.slot AS next_slot, m.last_slot
FROM unnest(CAST(:names AS text[])) AS s(study_name)
CROSS JOIN unnest(CAST(:kinds AS text[])) AS k(kind)
CROSS JOIN LATERAL (
    SELECT i.slot FROM work_items i
    WHERE i.kind = k.kind AND i.study_name = s.study_name AND i.state = 'waiting'
    ORDER BY i.slot LIMIT 1
) w
CROSS JOIN LATERAL (
    SELECT max(i.slot) AS last_slot FROM work_items i WHERE i.kind = k.kind AND i.study_name = s.study_name
) m
ORDER BY (w.slot - 1)::float8 / m.last_slot, s.study_name, k.kind
