-- Queries of the outbox and the relay. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: outbox_insert
-- Delays count from this statement, not from the transaction's start (now()): a 2 s delay inside a 3 s transaction
-- is still 2 s after the enqueue call, not already overdue at commit.
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval), %(dedup_key)s)
ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: outbox_insert_retry
-- A retry of a job already run (its id, its next attempt) that must wait longer than SQS can hide a message, as a
-- row of its own. The original message delivered again finds the same retry waiting and adds nothing.
INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, attempt)
VALUES (%(id)s, %(job_id)s, %(job_name)s, %(queue)s, %(payload)s::json, statement_timestamp() + %(delay)s::interval,
        coalesce(%(created_at)s, statement_timestamp()), %(attempt)s)
ON CONFLICT (job_id, attempt) WHERE job_id IS NOT NULL DO NOTHING;

-- name: outbox_find_dedup
SELECT id FROM conveyor.outbox WHERE job_name = %(job_name)s AND dedup_key = %(dedup_key)s;

-- name: outbox_insert_many
-- One statement for a whole batch: arrays unnested side by side.
WITH inserted AS (
    INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
    SELECT id, %(job_name)s, queue, payload::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval), dedup_key
    FROM unnest(%(ids)s::uuid[], %(queues)s::text[], %(payloads)s::text[], %(dedup_keys)s::text[])
        AS t(id, queue, payload, dedup_key)
    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT id FROM inserted;

-- name: outbox_find_dedup_many
SELECT dedup_key, id FROM conveyor.outbox WHERE job_name = %(job_name)s AND dedup_key = ANY(%(dedup_keys)s::text[]);

-- name: outbox_claim
-- Lease due rows, oldest first, in one short statement: rows another relay is claiming right now are skipped
-- (SKIP LOCKED), rows leased by a relay that is still within its lease are not due. No lock outlives the statement;
-- the lease (claim_token, locked_until) keeps other relays off while this one publishes.
UPDATE conveyor.outbox o
SET claim_token = %(token)s, locked_until = now() + %(lease)s::interval
-- By ctid, so the update visits exactly the rows the index scan locked (a join by id would scan the whole table).
WHERE o.ctid = ANY (ARRAY(
    SELECT ctid
    FROM conveyor.outbox
    WHERE run_at <= now()
      AND (next_attempt_at IS NULL OR next_attempt_at <= now())
      AND (locked_until IS NULL OR locked_until <= now())
      AND NOT (queue = ANY(%(skip_queues)s::text[]))
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING o.id, o.job_name, o.queue, o.payload::text AS payload, o.created_at, o.attempt, coalesce(o.job_id, o.id) AS job_id;

-- name: outbox_mark_published
-- Published rows leave the outbox and enter the run ledger (keyed by job id). Deleted whoever holds the lease now:
-- SQS has the message, so a relay that took the row over after our lease ran out must not publish it again. Row ids
-- are never reused, so this deletes exactly the rows that were sent.
WITH published AS (
    DELETE FROM conveyor.outbox o
    WHERE o.id = ANY(%(ids)s::uuid[])
    RETURNING o.id AS row_id, coalesce(o.job_id, o.id) AS id, o.job_name, o.queue, o.payload, o.dedup_key, o.created_at, o.run_at
)
INSERT INTO conveyor.runs (id, job_name, queue, payload, dedup_key, status, created_at, run_at, published_at, message_id)
SELECT p.id, p.job_name, p.queue, p.payload, p.dedup_key, 'queued', p.created_at, p.run_at, now(), m.message_id
FROM published p
JOIN unnest(%(ids)s::uuid[], %(message_ids)s::text[]) AS m(id, message_id) ON m.id = p.row_id
ON CONFLICT (id) DO NOTHING;

-- name: outbox_mark_failed
-- Entries SQS refused: a permanent refusal, or the last allowed attempt, moves the row to conveyor.outbox_dead
-- (out of the claim path, with the reason); any other comes back after a delay that grows with each failure.
-- Only rows still under this relay's lease are touched.
WITH failed AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(errors)s::text[], %(permanent)s::boolean[]) AS f(id, error, permanent)
), dead AS (
    DELETE FROM conveyor.outbox o
    USING failed f
    WHERE o.id = f.id AND o.claim_token = %(token)s
      AND (f.permanent OR o.publish_attempts + 1 >= %(max_attempts)s)
    RETURNING o.id, o.job_id, o.job_name, o.queue, o.payload, o.run_at, o.created_at, o.dedup_key,
              o.publish_attempts + 1 AS attempts, o.attempt, f.error
), buried AS (
    INSERT INTO conveyor.outbox_dead (id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, publish_attempts, attempt, last_error)
    SELECT id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, attempts, attempt, error FROM dead
    RETURNING id
), retried AS (
    UPDATE conveyor.outbox o
    SET publish_attempts = o.publish_attempts + 1,
        last_error = f.error,
        next_attempt_at = now() + least(interval '1 second' * power(2, least(o.publish_attempts, 16)), %(max_delay)s::interval),
        claim_token = NULL,
        locked_until = NULL
    FROM failed f
    WHERE o.id = f.id AND o.claim_token = %(token)s
      AND NOT (f.permanent OR o.publish_attempts + 1 >= %(max_attempts)s)
    RETURNING o.id
)
SELECT (SELECT count(*) FROM buried) AS dead, (SELECT count(*) FROM retried) AS retried;

-- name: outbox_release
-- Rows this relay claimed but did not try to send (its lease was running out): claimable again at once, with no
-- attempt counted.
UPDATE conveyor.outbox
SET claim_token = NULL, locked_until = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND claim_token = %(token)s;

-- name: outbox_pending_count
SELECT count(*) FROM conveyor.outbox;

-- name: outbox_insert_scheduled
-- One scheduled run, carrying its period; shared.scheduled has already claimed the period.
INSERT INTO conveyor.outbox (id, job_name, queue, payload, scheduled_for)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::json, %(scheduled_for)s)
RETURNING id;

-- name: outbox_lag
-- How far behind the relay is: the age of the oldest due row (0 when nothing is due), and how many are due.
SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8 AS lag_seconds, count(*) AS due
FROM conveyor.outbox
WHERE run_at <= now();

-- name: outbox_dead_count
SELECT count(*) FROM conveyor.outbox_dead;

-- name: outbox_dead_list
SELECT id, coalesce(job_id, id), job_name, queue, publish_attempts, failed_at, last_error, octet_length(payload::text) AS payload_bytes
FROM conveyor.outbox_dead
ORDER BY failed_at DESC
LIMIT %(limit)s;

-- name: outbox_requeue_dead
SELECT conveyor.requeue_dead_outbox(%(ids)s::uuid[]);


-- name: outbox_summary
-- Per job and queue: rows waiting, due now, leased by a relay, failing to publish; and the oldest due row's age.
SELECT job_name, queue,
       count(*) AS pending,
       count(*) FILTER (WHERE run_at <= now()) AS due,
       count(*) FILTER (WHERE locked_until > now()) AS leased,
       count(*) FILTER (WHERE publish_attempts > 0) AS failing,
       coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8 AS oldest_due_seconds
FROM conveyor.outbox
GROUP BY job_name, queue
ORDER BY job_name, queue;
