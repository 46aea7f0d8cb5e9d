-- Park a running job (docs/queue.md, "Parking a job"): its handler waits for work done elsewhere
-- and asked to be resumed at resume_at. Back to queued, due then; the lease released; the attempt
-- given back (parking is not a failure, and the wait is no attempt's time); the stage, progress and
-- result kept as the handler left them; the checkpoint patch merged in; since when and for what
-- recorded for operators. The profile is left as it is ("Building deep memory").
--
-- resume_at is clamped to [now(), now() + max_park_seconds]. A job set aside for one named worker
-- (run_after in the year 9999, docs/queue.md "One named job") stays set aside, as in release_job.
-- If a cancel was requested while the attempt ran, the job is due at once instead, so that the
-- next claim cancels it and its outside work without waiting for resume_at.
-- Fenced: no row means the lease was lost, and nothing was written.
with resume as (
    select least(greatest(%(resume_at)s::timestamptz, now()),
                 now() + make_interval(secs => %(max_park_seconds)s)) as at
)
update import_jobs as job
set status = 'queued',
    attempt = greatest(job.attempt - 1, 0),
    run_after = case when job.cancel_requested_at is null
                     then greatest(job.run_after, resume.at) else now() end,
    lease_owner = null, lease_expires_at = null, heartbeat_at = null,
    checkpoint = job.checkpoint || %(checkpoint)s::jsonb,
    parked_at = now(),
    waiting_for = %(waiting_for)s
from resume
where job.id = %(job_id)s and job.attempt = %(attempt)s and job.lease_owner = %(owner)s
  and job.status = 'running'
returning job.run_after, resume.at as resume_at, job.attempt
