-- What the operations service (shared/operations/service.py) reads and writes beyond the ledger's and the outbox's
-- own modules. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: audit_insert
-- One row per mutating operation, in the transaction of its effect where it has one (migration 0007).
INSERT INTO conveyor.audit_log (actor, action, target, job_id, result, detail)
VALUES (left(%(actor)s, 500), %(action)s, left(%(target)s, 500), %(job_id)s, %(result)s, %(detail)s::jsonb)
RETURNING id;

-- name: audit_for_job
-- Newest first, by the partial index audit_log_job.
SELECT id, at, actor, action, target, result, detail
FROM conveyor.audit_log
WHERE job_id = %(job_id)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: run_attempts
-- The failed attempts the handler kept (the last 25), oldest first as stored.
SELECT attempts FROM conveyor.runs WHERE id = %(id)s;

-- name: job_stats
-- Every count of GET /queues in one statement, per (job, queue): rows waiting in the outbox, rows the relay gave up
-- on, runs running now, and runs finished in the last hour and day. The finished counts read the runs_finished
-- index (only rows finished in the last 24 hours); running ones the runs_live index (finished_at IS NULL).
SELECT job_name, queue,
       sum(pending)::int AS pending, sum(dead)::int AS dead, sum(running)::int AS running,
       sum(succeeded_1h)::int, sum(failed_1h)::int, sum(succeeded_24h)::int, sum(failed_24h)::int
FROM (
    SELECT job_name, queue, count(*) AS pending, 0 AS dead, 0 AS running,
           0 AS succeeded_1h, 0 AS failed_1h, 0 AS succeeded_24h, 0 AS failed_24h
    FROM conveyor.outbox GROUP BY job_name, queue
    UNION ALL
    SELECT job_name, queue, 0, count(*), 0, 0, 0, 0, 0
    FROM conveyor.outbox_dead GROUP BY job_name, queue
    UNION ALL
    SELECT job_name, queue, 0, 0, count(*), 0, 0, 0, 0
    FROM conveyor.runs WHERE finished_at IS NULL AND status = 'running' GROUP BY job_name, queue
    UNION ALL
    SELECT job_name, queue, 0, 0, 0,
           count(*) FILTER (WHERE status = 'succeeded' AND finished_at >= now() - interval '1 hour'),
           count(*) FILTER (WHERE status IN ('failed', 'dead') AND finished_at >= now() - interval '1 hour'),
           count(*) FILTER (WHERE status = 'succeeded'),
           count(*) FILTER (WHERE status IN ('failed', 'dead'))
    FROM conveyor.runs
    WHERE finished_at >= now() - interval '24 hours'
    GROUP BY job_name, queue
) counts
GROUP BY job_name, queue;

-- name: queue_oldest_queued
-- Per queue, how long its oldest published, unstarted job has waited (its messages sit in SQS). Live rows only.
SELECT queue, extract(epoch FROM now() - min(coalesce(published_at, created_at)))::float8
FROM conveyor.runs
WHERE finished_at IS NULL AND status = 'queued'
GROUP BY queue;

-- name: throughput
-- Finished runs per bucket over the window, every bucket present (zero-filled): the last bucket is the current one.
-- Buckets are aligned to the epoch, so two calls a moment apart agree on their edges.
WITH edges AS (
    SELECT date_bin(%(bucket)s::interval, now(), timestamptz 'epoch') AS current
), buckets AS (
    SELECT generate_series(e.current - %(window)s::interval + %(bucket)s::interval, e.current, %(bucket)s::interval) AS start
    FROM edges e
), finished AS (
    SELECT date_bin(%(bucket)s::interval, finished_at, timestamptz 'epoch') AS start,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status IN ('failed', 'dead')) AS failed
    FROM conveyor.runs
    WHERE finished_at >= (SELECT min(start) FROM buckets)
    GROUP BY 1
)
SELECT b.start, coalesce(f.succeeded, 0)::int, coalesce(f.failed, 0)::int
FROM buckets b LEFT JOIN finished f ON f.start = b.start
ORDER BY b.start;

-- name: health_ping
SELECT 1;

-- name: retry_lock_run
-- The ledger row a retry reopens, locked for the rest of the transaction: a relay, a handler or a cancel touching
-- the job waits until the retry commits (or rolls back).
SELECT status, job_name, queue, last_error_type
FROM conveyor.runs
WHERE id = %(id)s
FOR UPDATE;

-- name: retry_find_unpublished
-- A job without a ledger row: in the outbox (pending, not retryable) or given up by the relay (failed: requeue it).
-- The row itself, or (for a job that has its ledger row) the dead row carrying its id in job_id.
SELECT 'outbox_dead' AS place, d.id FROM conveyor.outbox_dead d
WHERE (d.id = %(id)s AND d.job_id IS NULL) OR d.job_id = %(id)s
UNION ALL
SELECT 'outbox', o.id FROM conveyor.outbox o
WHERE (o.id = %(id)s AND o.job_id IS NULL) OR o.job_id = %(id)s
LIMIT 1;

-- name: retry_enqueue
-- The job's next run, a new outbox row carrying the job's id in job_id (as a held retry or a released flow parent
-- does): the relay's mark then moves the ledger row from pending to queued with the new message id, and the handler
-- takes it as attempt 1. No dedup key: the ledger row keeps the job's, and a pending job holding the key must not
-- block a retry. One waiting row per job (index outbox_job): a second retry of the same job adds nothing.
INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, attempt, parent_id, scheduled_for)
SELECT %(row_id)s, r.id, r.job_name, %(queue)s, r.payload::json, statement_timestamp(), r.created_at, 1, r.parent_id,
       r.scheduled_for
FROM conveyor.runs r
WHERE r.id = %(id)s
ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: retry_reopen
-- A fresh attempt count (the handler counts from 0 again), no end; the failed attempts' history (attempts) and the
-- last error stay for the record. Reopening a flow's child counts it unfinished again (runs_flow_child_updated).
UPDATE conveyor.runs
SET status = 'pending', attempt = 0, finished_at = NULL, stale_at = NULL, queue = %(queue)s,
    reason = left(%(reason)s, 4000), updated_at = now()
WHERE id = %(id)s;
