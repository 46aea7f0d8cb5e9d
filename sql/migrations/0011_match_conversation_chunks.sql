-- match_conversation_chunks: the app's search over one user's chunks, with the predecessor's
-- signature and answer (docs/embeddings.md, "The read side"). Created only where pgvector and
-- the embedding column exist, and only when no function of that name is there: an app's own is
-- never replaced. Like the column in 0003, a database that gets pgvector later needs the
-- function written by hand (the statement below, with its column's type).
--
-- Who may call it: `soulworker migrate` closes every function a run creates to PUBLIC, anon and
-- authenticated (docs/supabase-exposure.md); service_role is granted here. The chat's query side
-- runs on the app's server with the service key, and the function filters by the owner it is
-- given, so a signed-in user must not be able to call it with someone else's id. It runs with
-- its caller's rights (security invoker): row level security applies to whoever calls it.
do $$
declare
    column_type text;
begin
    select format_type(a.atttypid, a.atttypmod) into column_type
    from pg_attribute as a
    where a.attrelid = to_regclass('conversation_chunks')
      and a.attname = 'embedding' and a.attnum > 0 and not a.attisdropped;
    if column_type is null or exists (
        select 1 from pg_proc
        where proname = 'match_conversation_chunks' and pronamespace = current_schema()::regnamespace
    ) then
        return;
    end if;
    -- Cosine distance (<=>): the vectors are stored at unit length, as the app's questions are.
    execute format($create$
        create function match_conversation_chunks(
            query_embedding %s,
            match_user_id uuid,
            match_count integer default 10,
            match_threshold double precision default 0.3
        )
        returns table (
            id uuid,
            user_id uuid,
            conversation_id text,
            title text,
            content text,
            chunk_tier text,
            message_count integer,
            created_at timestamptz,
            similarity double precision
        )
        language sql stable security invoker
        as $body$
            select c.id, c.user_id, c.conversation_id, c.title, c.content, c.chunk_tier,
                   c.message_count, c.created_at,
                   1 - (c.embedding <=> query_embedding) as similarity
            from conversation_chunks as c
            where c.user_id = match_user_id
              and c.embedding is not null
              and 1 - (c.embedding <=> query_embedding) > match_threshold
            order by c.embedding <=> query_embedding
            limit match_count
        $body$
    $create$, column_type);
    if to_regprocedure('auth.uid()') is not null
       and exists (select 1 from pg_roles where rolname = 'service_role') then
        execute format(
            'grant execute on function match_conversation_chunks(%s, uuid, integer, '
            'double precision) to service_role', column_type
        );
    end if;
end $$;
