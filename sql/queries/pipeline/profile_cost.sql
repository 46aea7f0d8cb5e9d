-- The model cost so far, kept current with every model checkpoint so a job whose full pass
-- fails still shows what it spent. Untyped text parameter: the column may be jsonb or text.
update user_profiles
set import_cost_json = %(import_cost_json)s
where user_id = %(user_id)s and import_job_id = %(job_id)s
