-- Whether anything is left to do: --drain keeps going while a job is queued (even one waiting
-- for its retry time, or parked until its handler's time: docs/queue.md, "Parking a job") or
-- running anywhere.
select exists (select 1 from import_jobs where status in ('queued', 'running')) as active
