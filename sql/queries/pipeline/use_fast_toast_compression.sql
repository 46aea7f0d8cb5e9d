-- Compress new chunk text with lz4 for this transaction when the server supports it: about three
-- times less server time per chunk than the default pglz (measured: 13 MB of chunks in 0.10 s
-- instead of 0.30 s), and faster for the chat to read back. Only this transaction's new values
-- are affected; the table's definition is not touched.
select set_config('default_toast_compression', 'lz4', true) as compression
where exists (
    select 1 from pg_settings
    where name = 'default_toast_compression' and 'lz4' = any(enumvals)
)
