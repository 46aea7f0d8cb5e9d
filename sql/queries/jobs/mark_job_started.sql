-- The job's attempt begins: user_profiles shows this job (see import_job_profile_started).
select import_job_profile_started(job.user_id, job.id, %(label)s)
from import_jobs as job
where job.id = %(job_id)s and job.attempt = %(attempt)s and job.lease_owner = %(owner)s
  and job.status = 'running'
