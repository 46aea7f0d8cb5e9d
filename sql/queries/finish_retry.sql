-- The attempt failed and another is allowed: back to the queue after the backoff delay, with the
-- error recorded. The profile is left as it is (DESIGN §12).
update import_jobs
set status = 'queued',
    run_after = now() + make_interval(secs => %(delay_seconds)s),
    last_error = %(message)s,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempt, 'stage', stage, 'error_class', %(error_class)s::text, 'code', %(code)s::text,
        'message', %(message)s::text, 'permanent', false, 'worker', lease_owner, 'at', now())),
    lease_owner = null, lease_expires_at = null, heartbeat_at = null
where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
  and status = 'running'
returning run_after
