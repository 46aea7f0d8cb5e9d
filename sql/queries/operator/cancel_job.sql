select cancel_import_job(%(job_id)s) as status
