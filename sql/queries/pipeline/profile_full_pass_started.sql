-- The background full pass begins (or resumes).
update user_profiles
set full_pass_status = 'processing',
    full_pass_started_at = coalesce(full_pass_started_at, now()),
    full_pass_error = null
where user_id = %(user_id)s and import_job_id = %(job_id)s
