-- The part of a Supabase project's auth schema that row level security relies on, as Supabase
-- defines it, run by a superuser before soulworker migrate. The API roles (anon, authenticated,
-- service_role) belong to the whole server: tests/supabase.py creates them.
create schema if not exists auth;
create table if not exists auth.users (id uuid primary key);
-- The signed-in user's id from the request's JWT: PostgREST 9+ sets request.jwt.claims (JSON),
-- older versions request.jwt.claim.sub.
create or replace function auth.uid() returns uuid language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid() to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;
