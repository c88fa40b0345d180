-- Queries of the outbox and the relay. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: outbox_insert
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::jsonb, coalesce(%(run_at)s, now() + %(delay)s::interval), %(dedup_key)s)
ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: outbox_find_dedup
SELECT id FROM conveyor.outbox WHERE job_name = %(job_name)s AND dedup_key = %(dedup_key)s;

-- name: outbox_insert_many
-- One statement for a whole batch: arrays unnested side by side.
WITH inserted AS (
    INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
    SELECT id, %(job_name)s, queue, payload, coalesce(%(run_at)s, now() + %(delay)s::interval), dedup_key
    FROM unnest(%(ids)s::uuid[], %(queues)s::text[], %(payloads)s::jsonb[], %(dedup_keys)s::text[])
        AS t(id, queue, payload, dedup_key)
    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT id FROM inserted;

-- name: outbox_find_dedup_many
SELECT dedup_key, id FROM conveyor.outbox WHERE job_name = %(job_name)s AND dedup_key = ANY(%(dedup_keys)s::text[]);

-- name: outbox_claim
-- Due rows, oldest first; rows another relay holds are skipped, never waited for.
SELECT id, job_name, queue, payload::text AS payload, created_at
FROM conveyor.outbox
WHERE run_at <= now()
  AND (next_attempt_at IS NULL OR next_attempt_at <= now())
  AND NOT (queue = ANY(%(skip_queues)s::text[]))
ORDER BY run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: outbox_mark_published
-- Published rows leave the outbox and enter the run ledger, in the claim's transaction.
WITH published AS (
    DELETE FROM conveyor.outbox o
    USING unnest(%(ids)s::uuid[], %(message_ids)s::text[]) AS p(id, message_id)
    WHERE o.id = p.id
    RETURNING o.id, o.job_name, o.queue, o.payload, o.dedup_key, o.created_at, o.run_at, p.message_id
)
INSERT INTO conveyor.runs (id, job_name, queue, payload, dedup_key, status, created_at, run_at, published_at, message_id)
SELECT id, job_name, queue, payload, dedup_key, 'queued', created_at, run_at, now(), message_id FROM published
ON CONFLICT (id) DO NOTHING;

-- name: outbox_mark_failed
-- Entries SQS refused stay pending and come back after a delay that grows with each failure.
UPDATE conveyor.outbox o
SET publish_attempts = o.publish_attempts + 1,
    last_error = f.error,
    next_attempt_at = now() + least(interval '1 second' * power(2, least(o.publish_attempts, 16)), %(max_delay)s::interval)
FROM unnest(%(ids)s::uuid[], %(errors)s::text[]) AS f(id, error)
WHERE o.id = f.id;

-- name: outbox_pending_count
SELECT count(*) FROM conveyor.outbox;

-- name: schedule_claim_fire
INSERT INTO conveyor.schedule_fires (job_name, fire_time) VALUES (%(job_name)s, %(fire_time)s)
ON CONFLICT DO NOTHING
RETURNING fire_time;

-- name: schedule_record_job
UPDATE conveyor.schedule_fires SET job_id = %(job_id)s WHERE job_name = %(job_name)s AND fire_time = %(fire_time)s;

-- name: outbox_lag
-- How far behind the relay is: the age of the oldest due row (0 when nothing is due), and how many are due.
SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS lag_seconds, count(*) AS due
FROM conveyor.outbox
WHERE run_at <= now();
