-- The predecessor's tables as the live database may hold them (docs/platform.md, "Lessons from the predecessor"), with rows.
create table user_profiles (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null unique references auth.users (id) on delete cascade,
    -- The CHECK as the later-sorting migration left it: no 'failed'.
    import_status text default 'none'
        check (import_status in ('none', 'quick_ready', 'processing', 'complete', 'locked')),
    import_error text,
    progress_percent integer default 0,
    import_stage text,
    processing_started_at timestamptz,
    storage_path text,
    file_type text,
    soul_md text, identity_md text, user_md text, agents_md text, tools_md text,
    soulprint_text text, memory_md text, ai_name text, archetype text,
    full_pass_status text default 'pending'
        check (full_pass_status in ('pending', 'processing', 'complete', 'failed')),
    full_pass_started_at timestamptz,
    full_pass_completed_at timestamptz,
    full_pass_error text,
    import_cost_json text,
    total_conversations integer, total_messages integer, total_chunks integer,
    processed_chunks integer, embedding_status text, embedding_progress integer,
    memory_status text, soulprint_locked boolean, locked_at timestamptz, raw_export_path text,
    soulprint jsonb, personality_profile jsonb
);
create index idx_user_profiles_processing on user_profiles (processing_started_at)
    where import_status = 'processing';
alter table user_profiles enable row level security;
create policy "Users read own profile" on user_profiles for select using (auth.uid() = user_id);

create table conversation_chunks (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    conversation_id text not null,
    title text,
    content text not null,
    message_count integer,
    created_at timestamptz not null,
    updated_at timestamptz default now(),
    is_recent boolean default false,
    chunk_tier text default 'medium'
);
create index idx_chunks_user on conversation_chunks (user_id);
create index idx_chunks_recent on conversation_chunks (user_id, is_recent);
create index idx_chunks_created on conversation_chunks (user_id, created_at desc);
create index idx_chunks_created_again on conversation_chunks (user_id, created_at desc);
create index idx_chunks_tier on conversation_chunks (user_id, chunk_tier);
alter table conversation_chunks enable row level security;

create table import_jobs (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    status text default 'pending' check (status in ('pending', 'processing', 'completed', 'failed')),
    source_type text default 'chatgpt_export',
    total_chunks integer,
    processed_chunks integer,
    error text,
    created_at timestamptz default now(),
    completed_at timestamptz
);
create index import_jobs_user_id_idx on import_jobs (user_id);
alter table import_jobs enable row level security;
create policy "Users insert own jobs" on import_jobs for insert with check (auth.uid() = user_id);

insert into auth.users (id) values
    ('11111111-1111-1111-1111-111111111111'),
    ('22222222-2222-2222-2222-222222222222'),
    ('33333333-3333-3333-3333-333333333333');
insert into user_profiles (user_id, import_status, soul_md, ai_name, full_pass_status,
                           import_cost_json, memory_md)
values
    ('11111111-1111-1111-1111-111111111111', 'complete', '{"communication_style":"direct"}',
     'Nova', 'complete', '{"total_cost_usd": 0.08}', '## Preferences\n- tea'),
    ('22222222-2222-2222-2222-222222222222', 'quick_ready', null, 'Ember', 'pending', null, null),
    ('33333333-3333-3333-3333-333333333333', 'locked', null, null, null, null, null);
insert into conversation_chunks (user_id, conversation_id, title, content, message_count,
                                 created_at, is_recent)
select '11111111-1111-1111-1111-111111111111', 'conv-' || n, 'Title ' || n, 'chunk text ' || n, 0,
       now() - make_interval(days => n), n < 180
from generate_series(1, 25) as n;
insert into import_jobs (user_id, status, total_chunks, processed_chunks, error, completed_at)
values
    ('11111111-1111-1111-1111-111111111111', 'completed', 25, 25, null, now()),
    ('22222222-2222-2222-2222-222222222222', 'failed', 10, 3, 'timeout', null),
    ('22222222-2222-2222-2222-222222222222', 'pending', null, null, null, null);
