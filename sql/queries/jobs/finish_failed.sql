-- The job failed for good (a permanent error, or the last attempt): recorded on the job and shown
-- in the profile (the import failed, or only the full pass did once quick_ready was reached). If
-- an operator asked for a cancel meanwhile, it ends cancelled, with the failure still recorded.
with job as (
    update import_jobs
    set status = case when cancel_requested_at is null then 'failed' else 'cancelled' end,
        finished_at = now(),
        last_error = case when cancel_requested_at is null
                          then %(message)s::text else 'Import cancelled.' end,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'stage', stage, 'error_class', %(error_class)s::text,
            'code', %(code)s::text, 'message', %(message)s::text,
            'permanent', %(permanent)s::boolean, 'worker', lease_owner, 'at', now())),
        lease_expires_at = null
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id, last_error
)
select import_job_profile_failed(job.user_id, job.id, job.last_error) from job
