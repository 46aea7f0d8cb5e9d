-- For each of the named tables that exists: what anon and authenticated may do with it (table or
-- column privileges, direct or through PUBLIC), whether row level security is on, how many
-- policies it has, and which permissive policies let those roles read every row (USING true).
-- Run only where the roles exist (see supabase_api_roles).
select t.name,
       format('%%I.%%I', n.nspname, c.relname) as qualified,
       c.relrowsecurity as row_security,
       exists (select 1 from pg_attribute as a
               where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped)
           as has_user_id,
       (select count(*) from pg_policy as p where p.polrelid = c.oid)::integer as policies,
       array(
           select p.policyname::text from pg_policies as p
           where p.schemaname = n.nspname and p.tablename = c.relname
             and p.permissive = 'PERMISSIVE' and p.cmd in ('SELECT', 'ALL') and p.qual = 'true'
             and p.roles && array['public', 'anon', 'authenticated']::name[]
           order by 1
       ) as open_policies,
       array(
           select privilege from unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                              'REFERENCES', 'TRIGGER']) as privilege
           where has_table_privilege('anon', c.oid, privilege)
              or (privilege in ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                  and has_any_column_privilege('anon', c.oid, privilege))
       ) as anon_privileges,
       array(
           select privilege from unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                              'REFERENCES', 'TRIGGER']) as privilege
           where has_table_privilege('authenticated', c.oid, privilege)
              or (privilege in ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                  and has_any_column_privilege('authenticated', c.oid, privilege))
       ) as authenticated_privileges
from unnest(%(tables)s::text[]) with ordinality as t(name, position)
join pg_class as c on c.oid = to_regclass(t.name)
join pg_namespace as n on n.oid = c.relnamespace
order by t.position
