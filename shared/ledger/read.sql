-- Reading the ledger through the conveyor.jobs view (migration 0003): published jobs from conveyor.runs, pending
-- ones from conveyor.outbox, unpublishable ones from conveyor.outbox_dead. Loaded by shared.sqlfile.
--
-- Optional filters are written "(%(x)s IS NULL OR column = %(x)s)": the statements are not prepared server-side
-- (prepare_threshold=None), so PostgreSQL plans each call with its values and drops the filters that are NULL, and
-- the rest reach each branch of the view's UNION ALL (runs_job_created, runs_created, runs_parent, primary keys).

-- name: jobs_get
SELECT id, job_name, queue, status, attempt, created_at, run_at, published_at, first_started_at, last_started_at,
       finished_at, stale_at, last_error_type, last_error, reason, progress, progress_message, result, parent_id,
       scheduled_for, message_id, dedup_key, payload, children_pending, updated_at
FROM conveyor.jobs
WHERE id = %(id)s
LIMIT 1;

-- name: jobs_list
-- Newest first, by (created_at, id): a page continues strictly after the last row of the previous one (keyset, never
-- OFFSET), so paging stays as cheap on page 1,000 as on page 1 and rows inserted meanwhile never shift a page.
-- "created_at <= before_at" repeats what the row comparison implies, in a form a created_at index can use.
SELECT id, job_name, queue, status, attempt, created_at, run_at, published_at, first_started_at, last_started_at,
       finished_at, stale_at, last_error_type, last_error, reason, progress, progress_message, result, parent_id,
       scheduled_for, message_id, dedup_key, payload, children_pending, updated_at
FROM conveyor.jobs
WHERE (%(job)s::text IS NULL OR job_name = %(job)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(parent)s::uuid IS NULL OR parent_id = %(parent)s::uuid)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  -- Free text: an exact job id when it parses as one, else a substring of the dedup key, the last error or the
  -- reason (a scan of what the other filters leave; the keyset order still bounds a page).
  AND (%(q)s::text IS NULL
       OR (%(q_id)s::uuid IS NOT NULL AND id = %(q_id)s::uuid)
       OR (%(q_id)s::uuid IS NULL
           AND (dedup_key ILIKE %(q)s::text OR last_error ILIKE %(q)s::text OR reason ILIKE %(q)s::text)))
  AND (%(before_at)s::timestamptz IS NULL
       OR (created_at <= %(before_at)s::timestamptz
           AND (created_at < %(before_at)s::timestamptz OR id < %(before_id)s::uuid)))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: jobs_count_children
SELECT count(*) FROM conveyor.jobs WHERE parent_id = %(parent)s;
