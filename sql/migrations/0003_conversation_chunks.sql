-- conversation_chunks: what the chat retrieves (docs/contract.md). Created when missing; otherwise
-- extended with what soulworker needs to replace a user's chunks idempotently.
create table if not exists conversation_chunks (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null,
    conversation_id text not null,
    title text,
    content text not null,
    message_count integer,
    created_at timestamptz not null,
    updated_at timestamptz not null default now(),
    is_recent boolean not null default false,
    chunk_tier text not null default 'medium'
);

alter table conversation_chunks
    add column if not exists title text,
    add column if not exists message_count integer,
    add column if not exists is_recent boolean default false,
    add column if not exists chunk_tier text default 'medium',
    add column if not exists import_job_id uuid,
    add column if not exists chunk_index integer,
    add column if not exists token_count integer;

comment on column conversation_chunks.import_job_id is
    'The import job that wrote this chunk; with chunk_index it makes a re-run idempotent.';

-- One row per (job, chunk): a retried or rescued parse can never duplicate chunks.
create unique index if not exists conversation_chunks_job_chunk
    on conversation_chunks (import_job_id, chunk_index);

do $$
begin
    -- Replacing a user's chunks deletes by user_id; make sure some index leads with it.
    if not exists (
        select 1 from pg_index i
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
        where i.indrelid = 'conversation_chunks'::regclass and a.attname = 'user_id'
          and i.indpred is null
    ) then
        create index conversation_chunks_user_id_idx on conversation_chunks (user_id);
    end if;
    -- The embedding column only where pgvector is installed; 768 is the app's dimension.
    if exists (select 1 from pg_extension where extname = 'vector') and not exists (
        select 1 from information_schema.columns
        where table_schema = current_schema() and table_name = 'conversation_chunks'
          and column_name = 'embedding'
    ) then
        execute 'alter table conversation_chunks add column embedding vector(768)';
    end if;
end $$;
