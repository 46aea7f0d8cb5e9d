-- The job failed for good (a permanent error, or the last attempt): recorded on the job and shown
-- in the profile (the import failed, or only the full pass did once quick_ready was reached).
with job as (
    update import_jobs
    set status = 'failed', finished_at = now(),
        last_error = %(message)s,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'stage', stage, 'error_class', %(error_class)s::text, 'code', %(code)s::text,
            'message', %(message)s::text, 'permanent', %(permanent)s::boolean, 'worker', lease_owner,
            'at', now())),
        lease_expires_at = null
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id
)
select import_job_profile_failed(job.user_id, job.id, %(message)s) from job
