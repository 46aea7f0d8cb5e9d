"""Supabase Storage: where an export is read from.

``path`` checks a job's ``storage_path`` before any request; ``download`` streams the object to a
private file, resuming with ``Range``; ``answers`` reads what Storage's answers mean (its errors
come as HTTP 400 with the real status in the body), for the download and for ``soulworker
doctor`` alike; ``buckets`` is doctor's probe of a bucket; ``errors`` turns Storage's answers
into failures a person can act on; ``local_file`` brings an export that is a file on this machine
into the same private file, under the same limits and errors, for ``soulworker import``. May
import: the ground floor (``soulworker.errors``, ``logs``, ``settings``) only.
"""
