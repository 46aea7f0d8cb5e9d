-- Artifacts whose name starts with a prefix (e.g. every finished fact batch), in name order.
select name, content
from import_job_artifacts
where job_id = %(job_id)s and starts_with(name, %(prefix)s)
order by name
