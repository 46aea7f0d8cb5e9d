-- Proves a quiet connection is still alive (a half-open one would wait forever).
select 1 as alive
