-- Inside a job's own transaction: hold the job row so no other worker can take it over before
-- this transaction commits. No row means the lease was lost and the transaction must roll back.
-- NO KEY UPDATE, the lock an UPDATE of the row takes: it excludes a takeover but not the
-- key-share locks that inserting artifacts (which reference the job) takes in other transactions.
select id
from import_jobs
where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
  and status = 'running'
for no key update
