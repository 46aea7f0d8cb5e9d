-- The job succeeded: final result, progress 100, the profile complete, and the personal data it
-- carried between stages deleted (and that of the user's earlier failed or cancelled imports,
-- which can no longer be retried now).
with job as (
    update import_jobs
    set status = 'succeeded', finished_at = now(), progress_percent = 100,
        result = result || %(result)s::jsonb, lease_expires_at = null, last_error = null
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id, created_at
), removed as (
    delete from import_job_artifacts as artifact
    using job, import_jobs as owner
    where artifact.job_id = owner.id and owner.user_id = job.user_id
      and (owner.id = job.id
           or (owner.status in ('failed', 'cancelled') and owner.created_at < job.created_at))
)
select import_job_profile_succeeded(job.user_id, job.id) from job
