-- Give a job back on shutdown: queued again at once, its attempt not charged, its checkpoint
-- kept so the next worker resumes where this one stopped. The profile is left as it is.
-- "At once" is now, or the job's own run_after when that is later: a job set aside for one
-- named worker (soulworker import's, run_after in the year 9999; docs/queue.md "One named job")
-- stays out of every other worker's claim when it is released.
update import_jobs
set status = 'queued', attempt = greatest(attempt - 1, 0),
    run_after = greatest(run_after, now()),
    lease_owner = null, lease_expires_at = null, heartbeat_at = null
where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
  and status = 'running'
returning id
