-- Who may call soulworker's functions (docs/supabase-exposure.md). PostgreSQL lets PUBLIC execute
-- every new function, and Supabase's default privileges also grant EXECUTE to anon, authenticated
-- and service_role by name, so the `revoke ... from public` of 0008 left every function callable
-- through the API: a signed-in user could call import_job_profile_failed and overwrite another
-- user's profile, or cancel_import_job on anyone's import. From here on:
-- * the worker, the role that runs migrate and owns the functions, calls them all;
-- * service_role may call the operator functions (retry_import_job, cancel_import_job) and the
--   two profile functions they call in turn (a function runs with its caller's rights);
-- * nobody else may call any of them; the trigger functions run from their triggers only, which
--   needs no EXECUTE privilege.
-- Functions that later migrations create are closed the same way by `soulworker migrate` itself.
do $$
declare
    routine text;
    role_name text;
    supabase boolean := to_regprocedure('auth.uid()') is not null;
begin
    foreach routine in array array[
        'import_jobs_notify_runnable()',
        'import_jobs_touch_updated_at()',
        'import_job_profile_started(uuid, uuid, text)',
        'import_job_profile_progress(uuid, uuid, integer, text)',
        'import_job_profile_succeeded(uuid, uuid)',
        'import_job_profile_failed(uuid, uuid, text)',
        'retry_import_job(uuid)',
        'cancel_import_job(uuid)'
    ] loop
        execute format('revoke all on function %s from public', routine);
        foreach role_name in array array['anon', 'authenticated', 'service_role'] loop
            if supabase and exists (select 1 from pg_roles where rolname = role_name) then
                execute format('revoke all on function %s from %I', routine, role_name);
            end if;
        end loop;
    end loop;

    if not (supabase and exists (select 1 from pg_roles where rolname = 'service_role')) then
        return;
    end if;
    foreach routine in array array[
        'retry_import_job(uuid)',
        'cancel_import_job(uuid)',
        'import_job_profile_started(uuid, uuid, text)',
        'import_job_profile_failed(uuid, uuid, text)'
    ] loop
        execute format('grant execute on function %s to service_role', routine);
    end loop;
end $$;
