select retry_import_job(%(job_id)s) as status
