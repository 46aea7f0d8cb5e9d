-- Recent jobs for `soulworker jobs`, newest first, optionally of one status and/or one user.
select id, user_id, status, stage, progress_percent, attempt, max_attempts, priority,
       now() - created_at as age, run_after, lease_owner, now() - heartbeat_at as heartbeat_age,
       last_error
from import_jobs
where (%(status)s::text is null or status = %(status)s::text)
  and (%(user_id)s::uuid is null or user_id = %(user_id)s::uuid)
order by created_at desc
limit %(limit)s
