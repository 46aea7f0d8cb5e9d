-- Parked jobs (docs/queue.md, "Parking a job"). A handler that waits for work done elsewhere (a
-- Message Batch) parks its job: back to queued with a later run_after, lease released, attempt
-- given back, and these two columns saying since when and for what. A parked job is an ordinary
-- queued job for the claim; the columns are for operators, for cancel_import_job, and for the
-- next claim, which returns them to the handler and clears them.
alter table import_jobs add column if not exists parked_at timestamptz;
alter table import_jobs add column if not exists waiting_for text;

comment on column import_jobs.parked_at is
    'Set while the job is parked (queued, waiting for work done elsewhere); cleared by the claim.';
comment on column import_jobs.waiting_for is
    'What a parked job waits for, one short line for operators; never conversation text.';

-- Only a queued job is parked, and a parked job always says what it waits for, in one short line
-- (soulworker/jobs/park.py cleans and bounds it; this holds an operator's edit to the same rule).
alter table import_jobs add constraint import_jobs_parked_only_when_queued
    check (parked_at is null or status = 'queued');
alter table import_jobs add constraint import_jobs_parked_says_what_for
    check ((parked_at is null) = (waiting_for is null));
alter table import_jobs add constraint import_jobs_waiting_for_one_short_line
    check (char_length(waiting_for) between 1 and 200 and waiting_for !~ '[[:cntrl:]]');

-- select cancel_import_job('<job id>'): as in 0004, except for a parked job. A parked job may own
-- paid work outside the database (a batch of model requests) that only its handler knows how to
-- stop, so it is not cancelled here: the request is recorded and the job made due now, a worker
-- claims it (the NOTIFY trigger wakes one), its handler cancels that work, and the worker records
-- the job cancelled. Returns 'cancel_requested' then, as for a running job.
-- create or replace keeps the function's privileges (0008, 0010): tests/integration/test_exposure.py.
create or replace function cancel_import_job(p_job_id uuid) returns text
language plpgsql as $$
declare
    job import_jobs;
begin
    select * into job from import_jobs where id = p_job_id for update;
    if not found then
        raise exception 'import job % does not exist', p_job_id using errcode = 'no_data_found';
    end if;
    if job.status = 'queued' and job.parked_at is not null then
        update import_jobs
        set cancel_requested_at = coalesce(cancel_requested_at, now()),
            run_after = least(run_after, now())
        where id = p_job_id;
        return 'cancel_requested';
    elsif job.status = 'queued' then
        update import_jobs
        set status = 'cancelled', finished_at = now(),
            cancel_requested_at = coalesce(cancel_requested_at, now()),
            last_error = 'Import cancelled.'
        where id = p_job_id;
        perform import_job_profile_failed(job.user_id, job.id, 'Import cancelled.');
        return 'cancelled';
    elsif job.status = 'running' then
        update import_jobs set cancel_requested_at = coalesce(cancel_requested_at, now())
        where id = p_job_id;
        return 'cancel_requested';
    end if;
    raise exception 'import job % already finished (%); there is nothing to cancel',
        p_job_id, job.status
        using errcode = 'object_not_in_prerequisite_state';
end $$;

-- import_jobs_overview gains a 'waiting' section (parked jobs: what they wait for, since when,
-- until when) and two columns at the end. Parked jobs leave the 'failure' section, which lists
-- jobs waiting to retry. create or replace view resets the view's options, so security_invoker
-- (0008) is given again here; its grants are kept.
create or replace view import_jobs_overview with (security_invoker = true) as
select *
from (
    select 'queue'::text as section, 1 as section_order,
           status, count(*)::integer as jobs,
           null::uuid as job_id, null::uuid as user_id, null::text as stage,
           null::smallint as progress_percent, null::integer as attempt,
           null::integer as max_attempts, null::text as worker,
           null::interval as heartbeat_age, null::interval as lease_left,
           now() - min(created_at) as age, null::timestamptz as next_run_at,
           null::text as last_error, null::text as waiting_for, null::timestamptz as parked_at
    from import_jobs
    group by status
    union all
    select 'running', 2, status, 1, id, user_id, stage, progress_percent, attempt, max_attempts,
           lease_owner, now() - heartbeat_at, lease_expires_at - now(), now() - created_at,
           null, last_error, null, null
    from import_jobs
    where status = 'running'
    union all
    select 'waiting', 3, status, 1, id, user_id, stage, progress_percent, attempt, max_attempts,
           null, null, null, now() - created_at, run_after, last_error,
           case when cancel_requested_at is not null
                then 'cancel requested; ' || waiting_for else waiting_for end,
           parked_at
    from import_jobs
    where status = 'queued' and parked_at is not null
    union all
    select 'failure', 4, status, 1, id, user_id, stage, progress_percent, attempt, max_attempts,
           lease_owner, null, null, now() - created_at,
           case when status = 'queued' then run_after end, last_error, null, null
    from import_jobs
    where (status = 'failed' and finished_at > now() - interval '7 days')
       or (status = 'queued' and last_error is not null and parked_at is null)
) report
order by section_order, status, age desc;

comment on view import_jobs_overview is
    'The import queue at a glance: counts by status, running jobs, parked jobs and what they '
    'wait for, recent failures and retries.';
