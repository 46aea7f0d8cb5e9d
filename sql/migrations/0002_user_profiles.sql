-- user_profiles: the app's table, one row per user, that the web app polls (docs/contract.md).
-- Created when missing; otherwise only missing columns are added. Existing columns are never
-- dropped or retyped (import_cost_json, for example, may be text in older databases).
create table if not exists user_profiles (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null,
    created_at timestamptz not null default now()
);

alter table user_profiles
    add column if not exists user_id uuid,
    add column if not exists import_status text default 'none',
    add column if not exists import_error text,
    add column if not exists progress_percent integer default 0,
    add column if not exists import_stage text,
    add column if not exists processing_started_at timestamptz,
    add column if not exists soul_md text,
    add column if not exists identity_md text,
    add column if not exists user_md text,
    add column if not exists agents_md text,
    add column if not exists tools_md text,
    add column if not exists soulprint_text text,
    add column if not exists ai_name text,
    add column if not exists archetype text,
    add column if not exists memory_md text,
    -- No default: a default of 'pending' once left every existing user looking stuck on
    -- "Building deep memory…" (docs/platform.md, the predecessor). A job sets it when it starts.
    add column if not exists full_pass_status text,
    add column if not exists full_pass_started_at timestamptz,
    add column if not exists full_pass_completed_at timestamptz,
    add column if not exists full_pass_error text,
    add column if not exists import_cost_json jsonb,
    -- Which import job the import_* and full_pass_* columns describe.
    add column if not exists import_job_id uuid;

comment on column user_profiles.import_job_id is
    'The import job whose progress and results the import_* and full_pass_* columns show.';

-- Upserts need one unique key on user_id; the app's table normally has it already.
do $$
begin
    if not exists (
        select 1 from pg_index i
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
        where i.indrelid = 'user_profiles'::regclass and i.indisunique and i.indnkeyatts = 1
          and i.indpred is null and a.attname = 'user_id'
    ) then
        create unique index user_profiles_user_id_key on user_profiles (user_id);
    end if;
end $$;

-- The app's migrations disagree about the import_status CHECK (one version forbids 'failed').
-- Replace whatever is there with one that allows every value soulworker writes plus the
-- legacy ones existing rows may hold. Added NOT VALID first so odd old rows never block the
-- migration, then validated when they allow it.
do $$
declare
    old_check record;
begin
    for old_check in
        select conname from pg_constraint
        where conrelid = 'user_profiles'::regclass and contype = 'c'
          and pg_get_constraintdef(oid) like '%import_status%'
          and conname <> 'user_profiles_import_status_valid'
    loop
        execute format('alter table user_profiles drop constraint %I', old_check.conname);
    end loop;
    if not exists (select 1 from pg_constraint where conrelid = 'user_profiles'::regclass
                   and conname = 'user_profiles_import_status_valid') then
        alter table user_profiles add constraint user_profiles_import_status_valid
            check (import_status is null or import_status in
                   ('none', 'processing', 'quick_ready', 'complete', 'failed', 'locked'))
            not valid;
        begin
            alter table user_profiles validate constraint user_profiles_import_status_valid;
        exception when check_violation then
            raise notice 'user_profiles has import_status values outside the known set; '
                         'the check applies to new writes only';
        end;
    end if;
    if not exists (select 1 from pg_constraint where conrelid = 'user_profiles'::regclass
                   and contype = 'c' and pg_get_constraintdef(oid) like '%full_pass_status%') then
        alter table user_profiles add constraint user_profiles_full_pass_status_valid
            check (full_pass_status is null or full_pass_status in
                   ('pending', 'processing', 'complete', 'failed'))
            not valid;
        begin
            alter table user_profiles validate constraint user_profiles_full_pass_status_valid;
        exception when check_violation then
            raise notice 'user_profiles has full_pass_status values outside the known set; '
                         'the check applies to new writes only';
        end;
    end if;
end $$;
