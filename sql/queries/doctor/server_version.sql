select current_setting('server_version_num')::int as num,
       current_setting('server_version') as version
