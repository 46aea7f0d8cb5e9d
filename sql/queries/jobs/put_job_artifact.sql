-- Store (or replace) one named piece of a job's personal working data.
insert into import_job_artifacts (job_id, name, content)
values (%(job_id)s, %(name)s, %(content)s::jsonb)
on conflict (job_id, name) do update set content = excluded.content, created_at = now()
