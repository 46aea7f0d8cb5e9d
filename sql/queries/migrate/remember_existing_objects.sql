-- The functions and table-like objects in the schema migrations create objects in (the first of
-- the search path), before a migration run applies its files, so that secure_new_objects can tell
-- which ones the run created. Gone when the transaction ends.
create temporary table soulworker_objects_before on commit drop as
select 'pg_proc'::regclass as catalog, oid from pg_proc
where pronamespace = current_schema()::regnamespace
union all
select 'pg_class'::regclass, oid from pg_class
where relnamespace = current_schema()::regnamespace and relkind in ('r', 'p', 'v', 'm', 'S', 'f')
