-- How many chunks this job has (for the embed stage's progress) and how many have no vector.
select count(*) as chunks, count(*) filter (where embedding is null) as without_embedding
from conversation_chunks
where import_job_id = %(job_id)s
