-- Personal data a job carries between its stages (the quick-pass sample, persona signals,
-- extracted facts). Kept out of import_jobs so that job rows, which operators read in the SQL
-- editor, never hold conversation text. Removed when the job succeeds or is deleted.
create table if not exists import_job_artifacts (
    job_id uuid not null references import_jobs (id) on delete cascade,
    name text not null,
    content jsonb not null,
    created_at timestamptz not null default now(),
    primary key (job_id, name)
);

comment on table import_job_artifacts is
    'Conversation-derived data a job passes between stages. Personal data: service role only.';

-- No policies: only the table owner and the service role (which bypasses RLS) can read it.
alter table import_job_artifacts enable row level security;
