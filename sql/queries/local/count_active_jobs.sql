-- How many jobs are queued or running: a local import refuses to share a busy database.
select count(*) as n from import_jobs where status in ('queued', 'running')
