-- import_jobs: the queue the web app inserts into (docs/contract.md, docs/queue.md).
--
-- An early migration of the app created an unused import_jobs table (status pending/processing/
-- completed/failed, total_chunks, processed_chunks, error, completed_at). It is carried aside as
-- import_jobs_legacy with all its rows; its indexes are renamed so their names are free again.
do $$
declare
    legacy_index record;
begin
    if to_regclass('import_jobs') is not null and not exists (
        select 1 from information_schema.columns
        where table_schema = current_schema() and table_name = 'import_jobs'
          and column_name = 'lease_owner'
    ) then
        if to_regclass('import_jobs_legacy') is not null then
            raise exception 'import_jobs has the legacy shape but import_jobs_legacy already exists'
                using hint = 'Rename or drop one of them by hand, then run soulworker migrate again.';
        end if;
        alter table import_jobs rename to import_jobs_legacy;
        for legacy_index in
            select indexname from pg_indexes
            where schemaname = current_schema() and tablename = 'import_jobs_legacy'
              and indexname like 'import\_jobs%' and indexname not like 'import\_jobs\_legacy%'
        loop
            execute format('alter index %I rename to %I', legacy_index.indexname,
                           'import_jobs_legacy' || substr(legacy_index.indexname, 12));
        end loop;
        comment on table import_jobs_legacy is
            'The app''s first, unused import_jobs table, kept with its rows by soulworker migrate.';
    end if;
end $$;

create table if not exists import_jobs (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null,
    storage_path text not null,
    file_type text,
    status text not null default 'queued',
    stage text,
    progress_percent smallint not null default 0,
    attempt integer not null default 0,
    max_attempts integer not null default 3,
    priority integer not null default 0,
    run_after timestamptz not null default now(),
    lease_owner text,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    cancel_requested_at timestamptz,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz not null default now(),
    last_error text,
    errors jsonb not null default '[]'::jsonb,
    result jsonb not null default '{}'::jsonb,
    checkpoint jsonb not null default '{}'::jsonb,
    constraint import_jobs_status_valid
        check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    constraint import_jobs_stage_valid
        check (stage in ('download', 'parse', 'quick_pass', 'embed', 'full_pass', 'finish')),
    constraint import_jobs_file_type_valid check (file_type in ('json', 'zip')),
    constraint import_jobs_progress_range check (progress_percent between 0 and 100),
    constraint import_jobs_attempt_range check (attempt >= 0),
    constraint import_jobs_max_attempts_range check (max_attempts between 1 and 100),
    constraint import_jobs_storage_path_length check (length(storage_path) between 1 and 1024),
    constraint import_jobs_running_has_lease
        check (status <> 'running' or (lease_owner is not null and lease_expires_at is not null)),
    constraint import_jobs_finished_when_final
        check ((finished_at is not null) = (status in ('succeeded', 'failed', 'cancelled'))),
    constraint import_jobs_errors_is_array check (jsonb_typeof(errors) = 'array'),
    constraint import_jobs_result_is_object check (jsonb_typeof(result) = 'object'),
    constraint import_jobs_checkpoint_is_object check (jsonb_typeof(checkpoint) = 'object')
);

comment on table import_jobs is
    'Imports to run. The web app inserts (user_id, storage_path); soulworker does the rest.';
comment on column import_jobs.priority is 'Higher runs first among due jobs; then oldest first.';
comment on column import_jobs.attempt is
    'Attempts charged so far: a claim adds one, a release on shutdown gives it back.';
comment on column import_jobs.checkpoint is
    'Where a retried or rescued job resumes. Holds no conversation text (see import_job_artifacts).';

-- At most one active job per user: a second insert fails with a unique violation that the app
-- shows as "an import is already running".
create unique index if not exists import_jobs_one_active_per_user
    on import_jobs (user_id) where status in ('queued', 'running');
-- The claim's two ways in: due queued jobs in priority order, and running jobs whose lease ran out.
create index if not exists import_jobs_claim_order
    on import_jobs (priority desc, run_after, created_at) where status = 'queued';
create index if not exists import_jobs_lease_expiry
    on import_jobs (lease_expires_at) where status = 'running';
create index if not exists import_jobs_user_recent on import_jobs (user_id, created_at desc);

-- Wake an idle worker at once when a job becomes runnable: inserted, retried or released.
create or replace function import_jobs_notify_runnable() returns trigger
language plpgsql as $$
begin
    perform pg_notify('import_jobs', new.id::text);
    return null;
end $$;

drop trigger if exists import_jobs_notify_runnable on import_jobs;
create trigger import_jobs_notify_runnable
    after insert or update of status, run_after on import_jobs
    for each row when (new.status = 'queued' and new.run_after <= now())
    execute function import_jobs_notify_runnable();

-- updated_at stays true even when an operator edits a row by hand.
create or replace function import_jobs_touch_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end $$;

drop trigger if exists import_jobs_touch_updated_at on import_jobs;
create trigger import_jobs_touch_updated_at
    before update on import_jobs
    for each row execute function import_jobs_touch_updated_at();
