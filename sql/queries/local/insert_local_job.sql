-- A local import's job: the web app's insert plus the priority and attempts it needs.
insert into import_jobs (user_id, storage_path, priority, max_attempts)
values (%(user_id)s, %(storage_path)s, %(priority)s, %(max_attempts)s)
returning id
