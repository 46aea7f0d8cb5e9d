"""``soulworker import PATH``: the whole pipeline on a local export, for one person.

The import runs through the same job code as the daemon: a real ``import_jobs`` row is inserted,
claimed by id and run by the real ``Worker`` (``run_one``), ``JobRun`` and ``ImportPipeline``; the
real download stage takes the export from the local file through the pipeline's export-source
seam (``soulworker.pipeline.export_source``) instead of Supabase Storage. The rows go to an
embedded PostgreSQL (:mod:`.embedded_postgres`) when ``DATABASE_URL`` is not set. Everything here
serves that one command. May import every room.

Modules:

* :mod:`.run`: the orchestration, from the file to the summary;
* :mod:`.estimate_stage`: the cost of the model stages, when they are off;
* :mod:`.progress`: the progress display (rich bars on a terminal, plain lines elsewhere);
* :mod:`.results`: reading the soulprint back, writing the files, the summary lines.
"""
