-- The chunks of some conversations of the job (the v2 regeneration's sample), in order.
select conversation_id, chunk_index, content
from conversation_chunks
where import_job_id = %(job_id)s and conversation_id = any(%(conversation_ids)s)
order by chunk_index
