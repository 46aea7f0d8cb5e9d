-- The column default of import_jobs.max_attempts as written ('3'), read from the catalog, which
-- takes no lock on the table.
select pg_get_expr(d.adbin, d.adrelid) as default_value
from pg_attrdef as d
join pg_attribute as a on a.attrelid = d.adrelid and a.attnum = d.adnum
where d.adrelid = to_regclass('import_jobs') and a.attname = 'max_attempts'
