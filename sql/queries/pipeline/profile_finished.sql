-- The import is complete: MEMORY, the regenerated sections (or the quick pass's, kept), the cost.
-- The text parameters are untyped so they fit import_cost_json whether the column is jsonb or
-- (in older databases) text.
update user_profiles
set memory_md = %(memory_md)s,
    soul_md = coalesce(%(soul_md)s, soul_md), identity_md = coalesce(%(identity_md)s, identity_md),
    user_md = coalesce(%(user_md)s, user_md), agents_md = coalesce(%(agents_md)s, agents_md),
    tools_md = coalesce(%(tools_md)s, tools_md),
    soulprint_text = coalesce(%(soulprint_text)s, soulprint_text),
    full_pass_status = 'complete', full_pass_completed_at = now(), full_pass_error = null,
    import_cost_json = %(import_cost_json)s,
    import_status = 'complete', import_error = null
where user_id = %(user_id)s and import_job_id = %(job_id)s
