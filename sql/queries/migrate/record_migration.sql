insert into soulworker_migrations (name, checksum) values (%(name)s, %(checksum)s)
