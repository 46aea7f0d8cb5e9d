-- The text of one batch of chunks, in order.
select chunk_index, conversation_id, content
from conversation_chunks
where import_job_id = %(job_id)s and chunk_index = any(%(chunk_indexes)s)
order by chunk_index
