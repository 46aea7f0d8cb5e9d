-- How a job's life shows in user_profiles (docs/contract.md), and
-- the operators' retry and cancel. The worker's queries and the operator functions call the
-- same profile functions, so the web app sees the same thing whoever moved the job.
--
-- "Reached quick_ready" means: the profile row belongs to this job (import_job_id) and says
-- quick_ready or complete. From then on a failure touches only the full_pass_* columns.

-- A job starts (or resumes): the profile shows this job. A resumed job keeps what it reached.
create or replace function import_job_profile_started(p_user_id uuid, p_job_id uuid, p_label text)
returns void language sql as $$
    insert into user_profiles as p
        (user_id, import_job_id, import_status, import_error, progress_percent, import_stage,
         processing_started_at, full_pass_status, full_pass_error,
         full_pass_started_at, full_pass_completed_at)
    values (p_user_id, p_job_id, 'processing', null, 0, p_label, now(), 'pending', null, null, null)
    on conflict (user_id) do update set
        import_job_id = p_job_id,
        import_status = case
            when p.import_job_id = p_job_id and p.import_status in ('quick_ready', 'complete')
            then p.import_status else 'processing' end,
        import_error = case
            when p.import_job_id = p_job_id and p.import_status in ('quick_ready', 'complete')
            then p.import_error else null end,
        progress_percent = case
            when p.import_job_id = p_job_id then coalesce(p.progress_percent, 0) else 0 end,
        import_stage = p_label,
        processing_started_at = case
            when p.import_job_id = p_job_id then coalesce(p.processing_started_at, now())
            else now() end,
        full_pass_status = case
            when p.import_job_id = p_job_id then coalesce(p.full_pass_status, 'pending')
            else 'pending' end,
        full_pass_error = case when p.import_job_id = p_job_id then p.full_pass_error end,
        full_pass_started_at = case when p.import_job_id = p_job_id then p.full_pass_started_at end,
        full_pass_completed_at = case
            when p.import_job_id = p_job_id then p.full_pass_completed_at end
$$;

-- Progress mirrored from the job row (which never decreases within a job).
create or replace function import_job_profile_progress(
    p_user_id uuid, p_job_id uuid, p_percent integer, p_label text)
returns void language sql as $$
    update user_profiles
    set progress_percent = p_percent, import_stage = coalesce(p_label, import_stage)
    where user_id = p_user_id and import_job_id = p_job_id
$$;

create or replace function import_job_profile_succeeded(p_user_id uuid, p_job_id uuid)
returns void language sql as $$
    update user_profiles
    set import_status = 'complete', import_error = null, progress_percent = 100,
        import_stage = 'Complete'
    where user_id = p_user_id and import_job_id = p_job_id
$$;

-- A final failure or a cancel. Before quick_ready the import failed; after it, only the
-- background full pass did, and the soulprint the user already has stays usable.
create or replace function import_job_profile_failed(p_user_id uuid, p_job_id uuid, p_message text)
returns void language plpgsql as $$
declare
    reached_quick_ready boolean;
begin
    select p.import_job_id = p_job_id and p.import_status in ('quick_ready', 'complete')
      into reached_quick_ready
      from user_profiles p where p.user_id = p_user_id for update;
    if not found then
        insert into user_profiles (user_id, import_job_id, import_status, import_error,
                                   import_stage, progress_percent)
        values (p_user_id, p_job_id, 'failed', p_message, 'Failed', 0)
        on conflict (user_id) do nothing;
    elsif coalesce(reached_quick_ready, false) then
        update user_profiles
        set full_pass_status = 'failed', full_pass_error = p_message
        where user_id = p_user_id;
    else
        update user_profiles
        set import_job_id = p_job_id, import_status = 'failed', import_error = p_message,
            import_stage = 'Failed'
        where user_id = p_user_id;
    end if;
end $$;

-- select retry_import_job('<job id>'): a failed or cancelled job goes back to the queue with its
-- checkpoint and error history, attempts reset. Returns the new status.
create or replace function retry_import_job(p_job_id uuid) returns text
language plpgsql as $$
declare
    job import_jobs;
    active_id uuid;
begin
    select * into job from import_jobs where id = p_job_id for update;
    if not found then
        raise exception 'import job % does not exist', p_job_id using errcode = 'no_data_found';
    end if;
    if job.status not in ('failed', 'cancelled') then
        raise exception 'import job % is %; only a failed or cancelled job can be retried',
            p_job_id, job.status
            using errcode = 'object_not_in_prerequisite_state';
    end if;
    select id into active_id from import_jobs
    where user_id = job.user_id and status in ('queued', 'running') and id <> p_job_id limit 1;
    if found then
        raise exception 'user % already has an active import job %', job.user_id, active_id
            using errcode = 'unique_violation',
                  hint = 'Cancel that job or wait for it to finish, then retry this one.';
    end if;
    -- A later import replaced this one's chunks and soulprint; resuming this job would put the
    -- older export's results back over the newer ones.
    select id into active_id from import_jobs
    where user_id = job.user_id and created_at > job.created_at and id <> p_job_id
    order by created_at desc limit 1;
    if found then
        raise exception 'import job % was superseded by the user''s later import job %',
            p_job_id, active_id
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'Retry the later job instead, or insert a new job to import again.';
    end if;
    update import_jobs
    set status = 'queued', run_after = now(), attempt = 0, last_error = null,
        finished_at = null, cancel_requested_at = null,
        lease_owner = null, lease_expires_at = null, heartbeat_at = null
    where id = p_job_id;
    perform import_job_profile_started(job.user_id, job.id, 'Waiting to start');
    return 'queued';
end $$;

-- select cancel_import_job('<job id>'): a queued job is cancelled at once ('cancelled'); a running
-- one is flagged ('cancel_requested') and its worker stops it within one heartbeat.
create or replace function cancel_import_job(p_job_id uuid) returns text
language plpgsql as $$
declare
    job import_jobs;
begin
    select * into job from import_jobs where id = p_job_id for update;
    if not found then
        raise exception 'import job % does not exist', p_job_id using errcode = 'no_data_found';
    end if;
    if job.status = 'queued' then
        update import_jobs
        set status = 'cancelled', finished_at = now(),
            cancel_requested_at = coalesce(cancel_requested_at, now()),
            last_error = 'Import cancelled.'
        where id = p_job_id;
        perform import_job_profile_failed(job.user_id, job.id, 'Import cancelled.');
        return 'cancelled';
    elsif job.status = 'running' then
        update import_jobs set cancel_requested_at = coalesce(cancel_requested_at, now())
        where id = p_job_id;
        return 'cancel_requested';
    end if;
    raise exception 'import job % already finished (%); there is nothing to cancel',
        p_job_id, job.status
        using errcode = 'object_not_in_prerequisite_state';
end $$;
