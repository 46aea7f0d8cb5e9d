-- Start the parse with a clean slate for this job (a committed half-run cannot exist, but a
-- job's chunks must never be doubled, so make sure).
delete from conversation_chunks where import_job_id = %(job_id)s
