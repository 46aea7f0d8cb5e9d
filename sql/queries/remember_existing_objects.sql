-- Every function and table-like object that exists before a migration run applies its files, so
-- that secure_new_objects can tell which ones the run created. Gone when the transaction ends.
create temporary table soulworker_objects_before on commit drop as
select 'pg_proc'::regclass as catalog, oid from pg_proc
union all
select 'pg_class'::regclass, oid from pg_class where relkind in ('r', 'p', 'v', 'm', 'S', 'f')
