-- Renew the lease and learn whether an operator asked for a cancel. No row means the lease was
-- lost: another worker owns the job now.
update import_jobs
set heartbeat_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
  and status = 'running'
returning cancel_requested_at
