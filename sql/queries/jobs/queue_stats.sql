-- The queue's health in one row, for the `queue_stats` log event and `soulworker jobs --watch`
-- (docs/queue.md, "Queue health"). One pass over import_jobs, run once a minute by one worker.
--
-- Set-aside jobs (`soulworker import`, run_after in the year 9999: docs/queue.md, "One named job")
-- are queued but not due: they are counted as set_aside and never as the oldest queued job.
-- Jobs waiting for a retry (run_after later than now) are queued but not yet due either, and
-- so are parked jobs (docs/queue.md, "Parking a job"): queued until the time their handler asked
-- for, counted as parked, never as overdue. A parked job whose time has come is due like any other.
select
    count(*) filter (where status = 'queued') as queued,
    count(*) filter (where status = 'queued' and run_after <= now()) as queued_due,
    count(*) filter (where status = 'queued' and run_after >= timestamptz '9999-01-01')
        as set_aside,
    count(*) filter (where status = 'queued' and parked_at is not null) as parked,
    count(*) filter (where status = 'running') as running,
    count(*) filter (where status = 'succeeded') as succeeded,
    count(*) filter (where status = 'failed') as failed,
    count(*) filter (where status = 'cancelled') as cancelled,
    -- How long the job that became due first has waited for a worker; 0 when none waits.
    coalesce(
        extract(epoch from now() - min(run_after) filter (
            where status = 'queued' and run_after <= now()
        )), 0
    )::float8 as oldest_queued_seconds,
    -- The longest silence of a running job's lease keeper; 0 when nothing runs.
    coalesce(
        extract(epoch from now() - min(heartbeat_at) filter (where status = 'running')), 0
    )::float8 as max_heartbeat_age_seconds,
    -- Running jobs whose lease ran out: their worker died, and a claim will rescue them.
    count(*) filter (where status = 'running' and lease_expires_at < now()) as stale_running,
    count(*) filter (
        where status = 'failed' and finished_at >= now() - interval '1 hour'
    ) as failed_last_hour
from import_jobs
