-- The embedded database only (never a user's DATABASE_URL one): pgvector before migrating, so
-- that migration 0003 adds the embedding column and the embed stage has somewhere to write
-- (docs/embeddings.md, "soulworker import"). pgserver's binaries ship pgvector; a system
-- PostgreSQL may not, and then the import runs without embeddings, as before.
do $$
begin
    if exists (select 1 from pg_available_extensions where name = 'vector') then
        create extension if not exists vector;
    end if;
end
$$
