"""soulworker: the import worker that turns ChatGPT exports into a soulprint.

It claims rows of the ``import_jobs`` table, streams the export from Supabase Storage in
constant memory, and writes chunks, a persona "soulprint" and a long-term MEMORY back to
Postgres. See README.md for how to run it and docs/contract.md for the contract it keeps.
"""

__version__ = "0.1.0"
