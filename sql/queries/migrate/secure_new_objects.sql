-- After a migration run applied its files, in the same transaction (docs/supabase-exposure.md).
-- Only objects in the schema migrations create theirs in (the first of the search path, public on
-- Supabase) are looked at: other schemas belong to Supabase and its extensions, whose event
-- triggers may create objects of their own while a migration runs.
--
-- * Every function, procedure or aggregate the run created (not one of an extension) loses the
--   EXECUTE that PostgreSQL gives PUBLIC and, where Supabase's auth schema exists, the one that
--   Supabase's default privileges give anon and authenticated. None of soulworker's routines is
--   for API clients; a grant to service_role made by the migration itself is kept.
-- * Where the auth schema exists, a table, view or sequence the run created must give anon (or
--   PUBLIC, which anon inherits) nothing, and authenticated something only on a table with row
--   level security. Otherwise the run fails and is rolled back, naming each object: the migration
--   that created it must revoke what Supabase granted (and enable row level security) itself.
do $$
declare
    api_roles boolean := to_regprocedure('auth.uid()') is not null;
    role_name text;
    routine regprocedure;
    object record;
    exposed text[] := '{}';
begin
    for routine in
        select p.oid::regprocedure
        from pg_proc as p
        where p.oid not in (select oid from soulworker_objects_before where catalog = 'pg_proc'::regclass)
          and p.pronamespace = current_schema()::regnamespace
          and not exists (select 1 from pg_depend as d
                          where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                            and d.deptype = 'e')
    loop
        execute format('revoke all on routine %s from public', routine);
        if api_roles then
            foreach role_name in array array['anon', 'authenticated'] loop
                if exists (select 1 from pg_roles where rolname = role_name) then
                    execute format('revoke all on routine %s from %I', routine, role_name);
                end if;
            end loop;
        end if;
    end loop;

    if not api_roles then
        return;
    end if;
    for object in
        select c.oid::regclass as name, c.relkind, c.relrowsecurity,
               array(
                   select distinct coalesce(r.rolname::text, 'public')
                   from (
                       select grantee from aclexplode(c.relacl)
                       union all
                       select acl.grantee
                       from pg_attribute as a, aclexplode(a.attacl) as acl
                       where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                   ) as grants
                   left join pg_roles as r on r.oid = grants.grantee
                   where grants.grantee = 0 or r.rolname in ('anon', 'authenticated')
               ) as api_grantees
        from pg_class as c
        where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
          and c.oid not in (select oid from soulworker_objects_before where catalog = 'pg_class'::regclass)
          and c.relnamespace = current_schema()::regnamespace
          and not exists (select 1 from pg_depend as d
                          where d.classid = 'pg_class'::regclass and d.objid = c.oid
                            and d.deptype = 'e')
    loop
        if object.api_grantees && array['public', 'anon'] then
            exposed := exposed || format('%s (anon may use it)', object.name);
        elsif 'authenticated' = any(object.api_grantees)
              and not (object.relkind in ('r', 'p') and object.relrowsecurity) then
            exposed := exposed || format('%s (authenticated may use it without row level security)',
                                         object.name);
        end if;
    end loop;
    if cardinality(exposed) > 0 then
        raise exception 'this migration would open objects to Supabase API clients: %',
            array_to_string(exposed, ', ')
            using hint = 'Revoke what Supabase granted (and enable row level security) in the '
                         'migration that creates each object; see docs/supabase-exposure.md.';
    end if;
end $$
