-- Supabase's default privileges, run as the role that will run soulworker migrate: every table,
-- function and sequence it creates in public is granted in full to the three API roles, and only
-- row level security and explicit revokes narrow that.
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
