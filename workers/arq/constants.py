"""Redis key names, the same as arq's so that operators find what they know.

One addition: arq keeps a queue's jobs in a sorted set named after the queue, but here the
queue's name is also the kombu queue (a Redis list of Celery messages under that very key),
so the sorted set of a queue's tracked jobs lives under ``queue_index_prefix + queue``.
"""

from __future__ import annotations

default_queue_name = "arq:queue"
job_key_prefix = "arq:job:"
in_progress_key_prefix = "arq:in-progress:"
result_key_prefix = "arq:result:"
retry_key_prefix = "arq:retry:"
abort_jobs_ss = "arq:abort"
# Per queue: jobs whose Celery message is not sent yet (deferred, or retried later), scored
# by due time; the queue's own workers send them.
deferred_jobs_prefix = "arq:deferred:"
queue_index_prefix = "arq:jobs:"
# Held (per queue) by the worker that sends due deferred jobs.
promoter_lock_prefix = "arq:promoter-lock:"
# Age of entries in the abort set after which they are dropped (seconds).
abort_job_max_age = 60
health_check_key_suffix = ":health-check"
# How long a cron job's in-progress key outlives it: cron ids are unique per run time anyway.
keep_cronjob_progress = 60
# Extra time after a job's due time before its job key expires (1 day, in ms).
expires_extra_ms = 86_400_000
# How long the retry counter of a job lives (arq's figure).
retry_counter_ttl_s = 88_400
