-- Chunks of the job being parsed, streamed in by COPY (binary) in batches inside the parse
-- transaction: invisible to the chat until that transaction commits.
copy conversation_chunks
    (user_id, conversation_id, title, content, message_count, created_at, is_recent,
     chunk_tier, import_job_id, chunk_index, token_count)
from stdin (format binary)
