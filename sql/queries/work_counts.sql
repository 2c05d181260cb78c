-- Counts of the selected studies (the slot rule itself is the work_counts view, sql/15_work_counts.sql).
SELECT kind, study_name, slots, waiting, running, finished, claims
FROM work_counts
WHERE study_name = ANY(:names) AND kind = ANY(:kinds)
