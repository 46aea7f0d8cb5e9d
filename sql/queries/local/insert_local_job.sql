-- A local import's job: the web app's insert plus the attempts it needs, and a run_after that
-- never comes, so that no daemon's claim_job ever takes it (nor NOTIFY wakes one for it):
-- soulworker import claims it by id (docs/queue.md, "One named job"). The year 9999, not
-- 'infinity': psycopg cannot load an infinite timestamp into Python, so `soulworker jobs` and
-- any other client reading the row would fail on it.
insert into import_jobs (user_id, storage_path, max_attempts, run_after)
values (%(user_id)s, %(storage_path)s, %(max_attempts)s, '9999-01-01 00:00:00+00')
returning id
