"""``soulworker import PATH``: the whole pipeline on a local export, for one person.

The import runs through the same job code as the daemon: a real ``import_jobs`` row is inserted,
claimed and run by the real ``Worker``, ``JobRun`` and ``ImportPipeline``; the export is
downloaded by the real download stage from a local stand-in for Supabase Storage
(:mod:`.local_storage`), into an embedded PostgreSQL (:mod:`.embedded_postgres`) when
``DATABASE_URL`` is not set. Everything here serves that one command. May import every room.

Modules:

* :mod:`.run`: the orchestration, from the file to the summary;
* :mod:`.estimate_stage`: the cost of the model stages, when they are off;
* :mod:`.progress`: the progress display (rich bars on a terminal, plain lines elsewhere);
* :mod:`.results`: reading the soulprint back, writing the files, the summary lines.
"""
