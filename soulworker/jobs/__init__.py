"""The import job's lifecycle: claim, lease, fenced writes, outcomes, the worker loop.

This is not a generic queue, and does not pretend to be: it runs rows of ``import_jobs``, its
statements mirror each job's state into the person's ``user_profiles`` row in the same
transaction (through the SQL functions ``import_job_profile_*``), and its messages speak of an
import. What it does not know is how an import works: a job's work is a handler (``handler``),
loaded by name, and the import pipeline is the one the daemon runs. See docs/queue.md.
May import: the ground floor only (``soulworker.errors``, ``logs``, ``settings``, ``db``,
``sql_files``); never the pipeline or the rooms below it.
"""
