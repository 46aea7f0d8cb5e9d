-- The job succeeded: final result, progress 100, the profile complete, and the personal data it
-- carried between stages deleted.
with job as (
    update import_jobs
    set status = 'succeeded', finished_at = now(), progress_percent = 100,
        result = result || %(result)s::jsonb, lease_expires_at = null, last_error = null
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id
), removed as (
    delete from import_job_artifacts as artifact using job where artifact.job_id = job.id
)
select import_job_profile_succeeded(job.user_id, job.id) from job
