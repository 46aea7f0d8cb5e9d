-- Recent jobs for `soulworker jobs`, newest first, optionally of one status and/or one user. The
-- status 'waiting' selects parked jobs (queued, waiting for work done elsewhere; docs/queue.md,
-- "Parking a job"), whose row also says for what, since when and until when.
select id, user_id, status, stage, progress_percent, attempt, max_attempts, priority,
       now() - created_at as age, run_after, lease_owner, now() - heartbeat_at as heartbeat_age,
       last_error, waiting_for, now() - parked_at as parked_for, run_after - now() as due_in,
       cancel_requested_at is not null as cancel_requested
from import_jobs
where (%(status)s::text is null or status = %(status)s::text
       or (%(status)s::text = 'waiting' and status = 'queued' and parked_at is not null))
  and (%(user_id)s::uuid is null or user_id = %(user_id)s::uuid)
order by created_at desc
limit %(limit)s
