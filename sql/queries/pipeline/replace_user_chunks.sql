-- The end of the parse: the user's previous chunks go, in the transaction that makes the new
-- ones visible, so the chat never sees an empty or a doubled set.
delete from conversation_chunks
where user_id = %(user_id)s and import_job_id is distinct from %(job_id)s
