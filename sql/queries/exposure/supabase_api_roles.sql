-- Whether this is a Supabase database (its auth schema with auth.uid()), and which of the roles
-- its API runs requests as exist.
select to_regprocedure('auth.uid()') is not null as supabase,
       to_regrole('anon') is not null as anon,
       to_regrole('authenticated') is not null as authenticated
