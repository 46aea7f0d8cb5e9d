-- What the full pass plans with: every chunk of the job, without its text.
select chunk_index, token_count, message_count, is_recent, created_at
from conversation_chunks
where import_job_id = %(job_id)s
order by chunk_index
