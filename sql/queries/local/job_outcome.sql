select status, last_error, result from import_jobs where id = %(job_id)s
