-- The quick pass is done: the five sections, the flattened soulprint, the name, and
-- import_status quick_ready (the chat is usable from now on). Only while the profile shows this job.
update user_profiles
set soul_md = %(soul_md)s, identity_md = %(identity_md)s, user_md = %(user_md)s,
    agents_md = %(agents_md)s, tools_md = %(tools_md)s,
    soulprint_text = %(soulprint_text)s, ai_name = %(ai_name)s, archetype = %(archetype)s,
    import_status = case when import_status = 'complete' then import_status else 'quick_ready' end,
    import_error = null
where user_id = %(user_id)s and import_job_id = %(job_id)s
