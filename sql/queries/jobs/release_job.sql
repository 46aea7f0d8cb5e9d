-- Give a job back on shutdown: queued again at once, its attempt not charged, its checkpoint
-- kept so the next worker resumes where this one stopped. The profile is left as it is.
update import_jobs
set status = 'queued', attempt = greatest(attempt - 1, 0), run_after = now(),
    lease_owner = null, lease_expires_at = null, heartbeat_at = null
where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
  and status = 'running'
returning id
