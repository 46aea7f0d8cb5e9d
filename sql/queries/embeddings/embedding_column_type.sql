-- The type of conversation_chunks.embedding as written in DDL ('vector(768)'), or no row when
-- the table or the column is absent (pgvector missing: migration 0003 adds the column only
-- where the extension exists). docs/embeddings.md, "Dimensions".
select format_type(a.atttypid, a.atttypmod) as column_type
from pg_attribute a
where a.attrelid = to_regclass('conversation_chunks')
  and a.attname = 'embedding'
  and a.attnum > 0
  and not a.attisdropped
