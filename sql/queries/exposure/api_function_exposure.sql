-- Which of the named functions anon or authenticated may execute (directly or through PUBLIC),
-- with their schema-qualified signatures. Run only where both roles exist.
select f.signature,
       format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
           as qualified,
       array_remove(array[
           case when has_function_privilege('anon', p.oid, 'EXECUTE') then 'anon' end,
           case when has_function_privilege('authenticated', p.oid, 'EXECUTE')
                then 'authenticated' end
       ], null) as callers
from unnest(%(functions)s::text[]) with ordinality as f(signature, position)
join pg_proc as p on p.oid = to_regprocedure(f.signature)
join pg_namespace as n on n.oid = p.pronamespace
where has_function_privilege('anon', p.oid, 'EXECUTE')
   or has_function_privilege('authenticated', p.oid, 'EXECUTE')
order by f.position
