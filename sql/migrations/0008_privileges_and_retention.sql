-- Nothing soulworker creates is for API clients (docs/supabase-exposure.md). Supabase grants anon and
-- authenticated access to every new object in public by default, and functions are executable by
-- PUBLIC unless revoked, so without this an anon key could read the operator view (every user's
-- jobs and errors), edit the migrations table, or call cancel_import_job on anyone's import.
-- Operators use the SQL editor (the postgres role, the owner) or the service role.

-- The view reads import_jobs with the rights of whoever queries it, so row level security applies
-- to it like to the table (PostgreSQL 15+).
alter view import_jobs_overview set (security_invoker = true);

alter table soulworker_migrations enable row level security;

do $$
declare
    role_name text;
    function_signature text;
begin
    foreach function_signature in array array[
        'retry_import_job(uuid)',
        'cancel_import_job(uuid)',
        'import_job_profile_started(uuid, uuid, text)',
        'import_job_profile_progress(uuid, uuid, integer, text)',
        'import_job_profile_succeeded(uuid, uuid)',
        'import_job_profile_failed(uuid, uuid, text)'
    ] loop
        execute format('revoke execute on function %s from public', function_signature);
        if exists (select 1 from pg_roles where rolname = 'service_role') then
            execute format('grant execute on function %s to service_role', function_signature);
        end if;
    end loop;
    foreach role_name in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = role_name) then
            execute format('revoke all on import_jobs_overview, soulworker_migrations from %I',
                           role_name);
        end if;
    end loop;
end $$;
