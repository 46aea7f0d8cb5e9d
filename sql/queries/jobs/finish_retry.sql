-- The attempt failed and another is allowed: back to the queue after the backoff delay, with the
-- error recorded. The profile is left as it is (docs/contract.md). If an operator asked for a cancel
-- meanwhile, the job ends cancelled instead: a cancel is never lost to a failure that raced it.
with job as (
    update import_jobs
    set status = case when cancel_requested_at is null then 'queued' else 'cancelled' end,
        finished_at = case when cancel_requested_at is null then null else now() end,
        run_after = case when cancel_requested_at is null
                         then now() + make_interval(secs => %(delay_seconds)s) else run_after end,
        last_error = case when cancel_requested_at is null
                          then %(message)s::text else 'Import cancelled.' end,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'stage', stage, 'error_class', %(error_class)s::text,
            'code', %(code)s::text, 'message', %(message)s::text, 'permanent', false,
            'worker', lease_owner, 'at', now())),
        lease_owner = case when cancel_requested_at is null then null else lease_owner end,
        lease_expires_at = null, heartbeat_at = null
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id, status, run_after
)
select job.status, job.run_after,
       (select import_job_profile_failed(job.user_id, job.id, 'Import cancelled.')
        where job.status = 'cancelled') as profile
from job
