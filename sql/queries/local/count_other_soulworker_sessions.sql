-- Other soulworker sessions on this database (application_name starts with "soulworker"): a
-- running daemon would claim a local import's job.
select count(*) as n
from pg_stat_activity
where datname = current_database() and application_name like %(pattern)s
  and pid <> pg_backend_pid()
