-- Personal working data (samples, persona text, facts) is kept only while it can still be used:
-- for a retry of a failed or cancelled job, for %(retention_days)s days after it ended, and never
-- once a later import of the same user has succeeded (an older job can no longer be retried then).
delete from import_job_artifacts as artifact
using import_jobs as job
where artifact.job_id = job.id
  and job.status in ('failed', 'cancelled')
  and (
      job.finished_at < now() - make_interval(days => %(retention_days)s)
      or exists (
          select 1 from import_jobs as later
          where later.user_id = job.user_id and later.status = 'succeeded'
            and later.created_at > job.created_at
      )
  )
