-- Claim one named job (soulworker import, docs/queue.md "One named job"): the claim_job update
-- for that id alone. It takes the job if it is queued, whatever its run_after (naming a job
-- means "now": soulworker import sets its own job's run_after to the year 9999 so that no
-- other worker's claim_job ever picks it), or running with an expired lease (a rescue, as in
-- claim_job). Same lease, same attempt charge, same columns returned. No row: the job is
-- missing or not claimable, and claim_state says why. Not SKIP LOCKED: a concurrent claim of
-- the same row is waited for, and then this one sees that it is running. As in claim_job, a
-- parked job's parked_at and waiting_for are cleared and returned as they were; the row lock of
-- "before" makes them the values of the row this update changes.
with before as (
    select id, parked_at, waiting_for from import_jobs where id = %(job_id)s for update
)
update import_jobs as job
set status = 'running',
    attempt = job.attempt + 1,
    lease_owner = %(owner)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    heartbeat_at = now(),
    started_at = coalesce(job.started_at, now()),
    parked_at = null,
    waiting_for = null
from before
where job.id = before.id
  and (job.status = 'queued' or (job.status = 'running' and job.lease_expires_at < now()))
returning job.id, job.user_id, job.storage_path, job.file_type, job.stage,
          job.progress_percent, job.attempt, job.max_attempts, job.priority,
          job.cancel_requested_at, job.created_at, job.checkpoint, job.result,
          before.parked_at, before.waiting_for
