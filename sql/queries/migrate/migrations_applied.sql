-- The applied migrations, or no row at all on a database soulworker never migrated.
select name, checksum
from soulworker_migrations
where to_regclass('soulworker_migrations') is not null
