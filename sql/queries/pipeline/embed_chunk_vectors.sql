-- One page's vectors, sent as one binary vector[] (soulworker/embeddings/vector_wire.py).
-- Matches this job's own chunks only: a set a newer import has replaced is gone, so nothing
-- matches and nothing is written to the new set (docs/pipeline.md, "Embed").
update conversation_chunks as c
set embedding = v.embedding
from unnest(%(chunk_indexes)s::int4[], %(embeddings)b::vector[]) as v(chunk_index, embedding)
where c.import_job_id = %(job_id)s
  and c.user_id = %(user_id)s
  and c.chunk_index = v.chunk_index
