-- Why a named job could not be claimed: its status and, when running, who holds it until when.
select status, lease_owner, lease_expires_at from import_jobs where id = %(job_id)s
