-- Progress, checkpoint and partial results of a running job, mirrored to user_profiles in the
-- same statement. Fenced: no row means the lease was lost. Progress never decreases.
with job as (
    update import_jobs
    set stage = coalesce(%(stage)s, stage),
        progress_percent = greatest(progress_percent, %(percent)s),
        checkpoint = checkpoint || %(checkpoint)s::jsonb,
        result = result || %(result)s::jsonb
    where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
      and status = 'running'
    returning id, user_id, progress_percent
)
select job.progress_percent,
       import_job_profile_progress(job.user_id, job.id, job.progress_percent, %(label)s)
from job
