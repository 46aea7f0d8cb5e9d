select content from import_job_artifacts where job_id = %(job_id)s and name = %(name)s
