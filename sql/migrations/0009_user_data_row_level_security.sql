-- Who may read what through Supabase's API (docs/supabase-exposure.md). Supabase's default
-- privileges give anon and authenticated every privilege on each new table, and user_profiles and
-- conversation_chunks, when soulworker created them, had no row level security: the public anon
-- key could read and change every user's soulprint and conversation text.
--
-- Where Supabase's auth schema exists:
-- * anon (a request with the public key and nobody signed in) gets nothing on soulworker's
--   tables and view, nor on the legacy import_jobs table that 0001 carried aside.
-- * user_profiles and conversation_chunks get row level security where they lack it. A table
--   with no policy at all also gets one that lets a signed-in user read their own rows, and
--   authenticated keeps SELECT only, since only the worker writes them. The app's policies, where
--   it wrote some, are what row level security now enforces: they and the app's grants to
--   authenticated stay as they are, and nothing is added to them.
-- * authenticated never holds TRUNCATE (which ignores row level security), REFERENCES or TRIGGER
--   on the tables users may use, nor anything on the worker's and operators' own tables and view.
-- Without the auth schema there are no API roles to keep out, and nothing here applies.
do $$
declare
    user_table text;
    has_anon boolean := exists (select 1 from pg_roles where rolname = 'anon');
    has_authenticated boolean := exists (select 1 from pg_roles where rolname = 'authenticated');
begin
    if to_regprocedure('auth.uid()') is null then
        raise notice 'no auth schema: privileges for Supabase''s API roles skipped';
        return;
    end if;

    if has_anon then
        revoke all on import_jobs, user_profiles, conversation_chunks, import_job_artifacts,
            import_jobs_overview, soulworker_migrations from anon;
    end if;
    if has_authenticated then
        revoke truncate, references, trigger on import_jobs, user_profiles, conversation_chunks
            from authenticated;
        revoke all on import_job_artifacts, import_jobs_overview, soulworker_migrations
            from authenticated;
    end if;
    if to_regclass('import_jobs_legacy') is not null then
        -- Renamed by soulworker, so no client knows it by this name; its rows are old jobs.
        if has_anon then
            revoke all on import_jobs_legacy from anon;
        end if;
        if has_authenticated then
            revoke all on import_jobs_legacy from authenticated;
        end if;
    end if;

    foreach user_table in array array['user_profiles', 'conversation_chunks'] loop
        if (select relrowsecurity from pg_class where oid = user_table::regclass) then
            continue;  -- the app's own setup, whatever its policies say
        end if;
        execute format('alter table %I enable row level security', user_table);
        if not has_authenticated
           or exists (select 1 from pg_policy where polrelid = user_table::regclass) then
            continue;
        end if;
        execute format('revoke insert, update, delete on %I from authenticated', user_table);
        execute format('grant select on %I to authenticated', user_table);
        -- (select auth.uid()) is evaluated once per query, not once per row.
        execute format(
            'create policy %I on %I for select to authenticated '
            'using (user_id = (select auth.uid()))',
            user_table || '_select_own', user_table);
    end loop;
end $$;
