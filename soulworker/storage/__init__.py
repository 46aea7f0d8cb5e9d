"""Supabase Storage: where an export is read from.

``path`` checks a job's ``storage_path`` before any request; ``download`` streams the object to a
private file, resuming with ``Range``; ``errors`` turns Storage's answers into failures a person
can act on. May import: the ground floor (``soulworker.errors``, ``logs``, ``settings``) only.
"""
