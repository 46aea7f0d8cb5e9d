-- The next page of this job's chunks to embed: after the cursor saved in the embed stage's
-- checkpoint entry, in chunk_index order (never an offset: docs/pipeline.md, "Embed").
select chunk_index, content
from conversation_chunks
where import_job_id = %(job_id)s and chunk_index > %(after_index)s
order by chunk_index
limit %(page_size)s
