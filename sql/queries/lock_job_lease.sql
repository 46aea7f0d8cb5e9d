-- Inside a job's own transaction: hold the job row so no other worker can take it over before
-- this transaction commits. No row means the lease was lost and the transaction must roll back.
select id
from import_jobs
where id = %(job_id)s and attempt = %(attempt)s and lease_owner = %(owner)s
  and status = 'running'
for update
