-- What a progress display shows: the same numbers the web app polls.
select status, stage, progress_percent from import_jobs where id = %(job_id)s
