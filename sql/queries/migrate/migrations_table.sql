-- Which migration files were applied, and the checksum of each as it was applied.
create table if not exists soulworker_migrations (
    name text primary key,
    checksum text not null,
    applied_at timestamptz not null default now()
)
