select to_regclass('soulworker_migrations') is not null as present
