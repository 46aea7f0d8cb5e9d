-- Drop the chunks of a conversation that turned out to be a stale duplicate (an older copy of a
-- conversation met again later in the export, e.g. in another shard).
delete from conversation_chunks
where import_job_id = %(job_id)s and chunk_index between %(first_index)s and %(last_index)s
