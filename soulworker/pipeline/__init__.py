"""The import as a list of resumable stages that the job lifecycle runs.

``handler`` builds the stages and runs them in order; ``import_run`` is one attempt's shared
state; each ``*_stage`` module is one stage (download, parse, quick pass, full pass, finish) that
saves its results with its checkpoint; ``handoffs`` holds what one stage hands to the later
ones (typed, with their stored JSON); ``export_source`` is where the download gets the export
(Supabase Storage, or a local file for ``soulworker import``); ``chunk_writer`` streams chunks
into Postgres; ``stages`` holds the progress ranges and labels. See docs/pipeline.md and
docs/architecture.md.
May import: every room below it (``jobs``, ``storage``, ``export``, ``conversations``,
``soulprint``, ``llm``) and the ground floor; never the commands.
"""
