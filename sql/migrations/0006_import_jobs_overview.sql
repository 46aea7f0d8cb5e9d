-- import_jobs_overview: the queue at a glance for the Supabase SQL editor.
--   select * from import_jobs_overview;
-- One row per line of the report, in three sections:
--   'queue'    one row per status: how many jobs, and the oldest one's age.
--   'running'  one row per running job: worker, stage, progress, heartbeat age, lease left.
--   'failure'  jobs that failed in the last 7 days and jobs waiting to retry, newest first.
create or replace view import_jobs_overview as
select *
from (
    select 'queue'::text as section, 1 as section_order,
           status, count(*)::integer as jobs,
           null::uuid as job_id, null::uuid as user_id, null::text as stage,
           null::smallint as progress_percent, null::integer as attempt,
           null::integer as max_attempts, null::text as worker,
           null::interval as heartbeat_age, null::interval as lease_left,
           now() - min(created_at) as age, null::timestamptz as next_run_at,
           null::text as last_error
    from import_jobs
    group by status
    union all
    select 'running', 2, status, 1, id, user_id, stage, progress_percent, attempt, max_attempts,
           lease_owner, now() - heartbeat_at, lease_expires_at - now(), now() - created_at,
           null, last_error
    from import_jobs
    where status = 'running'
    union all
    select 'failure', 3, status, 1, id, user_id, stage, progress_percent, attempt, max_attempts,
           lease_owner, null, null, now() - created_at,
           case when status = 'queued' then run_after end, last_error
    from import_jobs
    where (status = 'failed' and finished_at > now() - interval '7 days')
       or (status = 'queued' and last_error is not null)
) report
order by section_order, status, age desc;

comment on view import_jobs_overview is
    'The import queue at a glance: counts by status, running jobs, recent failures and retries.';
