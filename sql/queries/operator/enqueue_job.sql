-- The operator's enqueue: the same insert the web app runs, with the optional columns.
insert into import_jobs (user_id, storage_path, file_type, priority, max_attempts)
values (%(user_id)s, %(storage_path)s, %(file_type)s, %(priority)s,
        coalesce(%(max_attempts)s, (select column_default::integer from information_schema.columns
                                    where table_schema = current_schema()
                                      and table_name = 'import_jobs'
                                      and column_name = 'max_attempts')))
returning id
