-- Wake-ups for new runnable jobs (sent by the import_jobs_notify_runnable trigger).
listen import_jobs
