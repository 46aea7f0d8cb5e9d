-- Try to become the one worker that logs `queue_stats` (docs/queue.md, "Queue health"): a
-- session advisory lock, held for as long as this connection lives. Not blocking: a worker that
-- does not get it stays quiet and tries again at its next interval.
select pg_try_advisory_lock(%(key)s::bigint) as leader
