-- The worker stopped a job whose cancel was requested.
with job as (
    update import_jobs
    set status = 'cancelled', finished_at = now(), last_error = 'Import cancelled.',
        lease_expires_at = null
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id
)
select import_job_profile_failed(job.user_id, job.id, 'Import cancelled.') from job
