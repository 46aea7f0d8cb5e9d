-- Row level security where Supabase's auth schema exists (docs/contract.md): an authenticated user may
-- insert a job only for themself and read only their own jobs; nobody but the service role
-- (which bypasses RLS) updates or deletes. Elsewhere (plain Postgres) this is skipped.
do $$
begin
    if to_regnamespace('auth') is null or to_regprocedure('auth.uid()') is null then
        raise notice 'no auth schema: row level security for import_jobs skipped';
        return;
    end if;

    alter table import_jobs enable row level security;
    drop policy if exists import_jobs_insert_own on import_jobs;
    drop policy if exists import_jobs_select_own on import_jobs;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        create policy import_jobs_insert_own on import_jobs for insert to authenticated
            with check (user_id = auth.uid() and status = 'queued' and attempt = 0);
        create policy import_jobs_select_own on import_jobs for select to authenticated
            using (user_id = auth.uid());
        -- Users may set only what the web app sets; the queue's own columns are not theirs.
        revoke insert, update, delete, truncate on import_jobs from authenticated;
        grant insert (user_id, storage_path, file_type) on import_jobs to authenticated;
        grant select on import_jobs to authenticated;
    end if;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on import_jobs, import_job_artifacts from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on import_job_artifacts from authenticated;
    end if;

    -- Deleting a user deletes their jobs (and with them the artifacts).
    if to_regclass('auth.users') is not null and not exists (
        select 1 from pg_constraint where conrelid = 'import_jobs'::regclass
        and conname = 'import_jobs_user_id_fkey'
    ) then
        alter table import_jobs add constraint import_jobs_user_id_fkey
            foreign key (user_id) references auth.users (id) on delete cascade not valid;
    end if;
end $$;
