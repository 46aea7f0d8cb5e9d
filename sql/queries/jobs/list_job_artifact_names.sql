-- The names of a job's artifacts (not their content): which working data still exists.
select name
from import_job_artifacts
where job_id = %(job_id)s
order by name
