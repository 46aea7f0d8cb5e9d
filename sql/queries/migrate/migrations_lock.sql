-- Serialize `soulworker migrate` runs; released when the migration transaction ends (which also
-- works through a transaction pooler, where session locks do not).
select pg_advisory_xact_lock(%(key)s)
