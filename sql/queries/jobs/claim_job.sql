-- Claim the best runnable job: a due queued job (higher priority first, then the oldest), or a
-- running job whose lease expired because its worker died. One statement, committed at once,
-- so no row lock or transaction is held while the job runs. SKIP LOCKED lets any number of
-- workers claim side by side without waiting on each other.
-- A parked job (docs/queue.md, "Parking a job") is claimed like any queued job: the claim clears
-- parked_at and waiting_for and returns what they were, so the handler knows it is resumed.
with candidate as (
    select id, parked_at, waiting_for
    from import_jobs
    where (status = 'queued' and run_after <= now())
       or (status = 'running' and lease_expires_at < now())
    order by priority desc, run_after, created_at
    limit 1
    for update skip locked
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
from candidate
where job.id = candidate.id
returning job.id, job.user_id, job.storage_path, job.file_type, job.stage,
          job.progress_percent, job.attempt, job.max_attempts, job.priority,
          job.cancel_requested_at, job.created_at, job.checkpoint, job.result,
          candidate.parked_at, candidate.waiting_for
