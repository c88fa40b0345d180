-- Queries of the outbox and the relay. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: outbox_insert
-- Delays count from this statement, not from the transaction's start (now()): a 2 s delay inside a 3 s transaction
-- is still 2 s after the enqueue call, not already overdue at commit.
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval), %(dedup_key)s)
ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: outbox_insert_unkeyed
-- enqueue() without a dedup key, the call every producer pays: nothing can conflict (the only arbiter, outbox_dedup,
-- skips NULL keys) and the id is ours, so no ON CONFLICT (a speculative insertion) and no RETURNING. Delays count
-- from this statement, as in outbox_insert.
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval));

-- name: outbox_insert_now
-- outbox_insert_unkeyed without delay or run_at (most calls): two parameters fewer to send and parse.
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::json, statement_timestamp());

-- name: outbox_insert_retry
-- A retry of a job already run (its id, its next attempt) that must wait longer than SQS can hide a message, as a
-- row of its own. The original message delivered again finds the same retry waiting and adds nothing.
INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, attempt)
VALUES (%(id)s, %(job_id)s, %(job_name)s, %(queue)s, %(payload)s::json, statement_timestamp() + %(delay)s::interval,
        coalesce(%(created_at)s, statement_timestamp()), %(attempt)s)
ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO NOTHING;

-- name: outbox_find_dedup
SELECT id FROM conveyor.outbox WHERE job_name = %(job_name)s AND dedup_key = %(dedup_key)s;

-- name: outbox_copy_run_at
-- A keyless batch (enqueue_many) is written by COPY, which cannot compute a value per row: its run_at is computed
-- here, by the INSERT's own expression, in the statement just before the COPY. Delays then count from this
-- statement (one round trip before the COPY's), as they count from the INSERT's in enqueue().
SELECT coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval);

-- name: outbox_copy
-- Binary COPY of a keyless batch: no ON CONFLICT to resolve (no keys) and no RETURNING (the ids are ours). The other
-- columns take their defaults, as the INSERT's do; conveyor.outbox has no triggers to fire or skip.
COPY conveyor.outbox (id, job_name, queue, payload, run_at) FROM STDIN (FORMAT BINARY);

-- name: outbox_insert_many
-- One statement for a whole batch: arrays unnested side by side, sent in binary (the b placeholders; so in the two
-- queries below): a text array literal must quote and escape every JSON body, which took half the statement's time.
-- A key held by a pending job (or by an earlier item of the batch) inserts nothing and returns nothing; the caller
-- looks the holder up. Every write of a batch answers (id, dedup_key, outcome), as the queries below do.
WITH inserted AS (
    INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
    SELECT id, %(job_name)s, queue, payload::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval), dedup_key
    FROM unnest(%(ids)b::uuid[], %(queues)b::text[], %(payloads)b::text[], %(dedup_keys)b::text[])
        AS t(id, queue, payload, dedup_key)
    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id, dedup_key
)
SELECT id, dedup_key, 'inserted' AS outcome FROM inserted;

-- name: outbox_insert_many_unless_active
-- dedup='keep' with dedup_active: as outbox_insert_many, and a key that no pending job holds but a live job of the
-- ledger does (published and not finished, or a flow parent) writes nothing and answers that job ("active"). A
-- pending job holding the key wins first, as without dedup_active. Read and write are one statement, so a job
-- published between them can only be one the snapshot saw pending: its key's new row comes back as "raced", and
-- the caller gives it up to the published job (outbox_yield_to_active) in a statement that sees it.
WITH input AS (
    SELECT * FROM unnest(%(ids)b::uuid[], %(queues)b::text[], %(payloads)b::text[], %(dedup_keys)b::text[])
        AS t(id, queue, payload, dedup_key)
), held AS (
    SELECT o.dedup_key FROM conveyor.outbox o
    WHERE o.job_name = %(job_name)s AND o.dedup_key IN (SELECT dedup_key FROM input)
), active AS (
    SELECT DISTINCT ON (r.dedup_key) r.dedup_key, r.id
    FROM conveyor.runs r
    WHERE r.job_name = %(job_name)s
      AND r.dedup_key IN (SELECT dedup_key FROM input EXCEPT SELECT dedup_key FROM held)
      AND r.finished_at IS NULL AND r.status IN ('waiting', 'pending', 'queued', 'running', 'retrying')
    ORDER BY r.dedup_key, r.created_at DESC
), written AS (
    INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, dedup_key)
    SELECT i.id, %(job_name)s, i.queue, i.payload::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval), i.dedup_key
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM active a WHERE a.dedup_key = i.dedup_key)
    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id, dedup_key
)
SELECT w.id, w.dedup_key, CASE WHEN w.dedup_key IN (SELECT dedup_key FROM held) THEN 'raced' ELSE 'inserted' END AS outcome
FROM written w
UNION ALL
SELECT a.id, a.dedup_key, 'active' FROM active a;

-- name: outbox_replace_many
-- dedup='replace': a pending job holding the key takes the new payload, queue and run_at, with a clean publish
-- record, and keeps its id ("replaced"). A pending row a relay has claimed (claim_token set, whether or not its lease
-- has run out: a late relay still deletes it by id once SQS has it) may already be on SQS with the old payload. It
-- takes the new row's id instead, loses its claim and is published again later as a job of its own: the message on
-- its way keeps the old id, the relay's mark finds no row by that id to delete, and the replacement is not lost.
-- With %(active)s, a key no pending job holds but a live job of the ledger does writes nothing and answers that job
-- ("active"): what is on SQS cannot be replaced. "raced" as in outbox_insert_many_unless_active. Keys must be
-- unique within the batch (an upsert cannot touch one row twice in a statement).
WITH input AS (
    SELECT * FROM unnest(%(ids)b::uuid[], %(queues)b::text[], %(payloads)b::text[], %(dedup_keys)b::text[])
        AS t(id, queue, payload, dedup_key)
), held AS (
    SELECT o.dedup_key FROM conveyor.outbox o
    WHERE %(active)s AND o.job_name = %(job_name)s AND o.dedup_key IN (SELECT dedup_key FROM input)
), active AS (
    SELECT DISTINCT ON (r.dedup_key) r.dedup_key, r.id
    FROM conveyor.runs r
    WHERE %(active)s AND r.job_name = %(job_name)s
      AND r.dedup_key IN (SELECT dedup_key FROM input EXCEPT SELECT dedup_key FROM held)
      AND r.finished_at IS NULL AND r.status IN ('waiting', 'pending', 'queued', 'running', 'retrying')
    ORDER BY r.dedup_key, r.created_at DESC
), written AS (
    INSERT INTO conveyor.outbox AS o (id, job_name, queue, payload, run_at, dedup_key)
    SELECT i.id, %(job_name)s, i.queue, i.payload::json, coalesce(%(run_at)s, statement_timestamp() + %(delay)s::interval), i.dedup_key
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM active a WHERE a.dedup_key = i.dedup_key)
    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO UPDATE
    SET id               = CASE WHEN o.claim_token IS NULL THEN o.id ELSE excluded.id END,
        created_at       = CASE WHEN o.claim_token IS NULL THEN o.created_at ELSE excluded.created_at END,
        queue            = excluded.queue,
        payload          = excluded.payload,
        run_at           = excluded.run_at,
        publish_attempts = 0,
        next_attempt_at  = NULL,
        last_error       = NULL,
        claim_token      = NULL,
        locked_until     = NULL
    -- xmax is 0 on a row version this statement inserted and holds our transaction id on one it updated (the
    -- upsert locks the row first): PostgreSQL 17 has no RETURNING old.* to tell them apart.
    RETURNING o.id, o.dedup_key, o.xmax = 0 AS inserted
)
SELECT w.id, w.dedup_key,
       CASE WHEN NOT w.inserted THEN 'replaced' WHEN w.dedup_key IN (SELECT dedup_key FROM held) THEN 'raced' ELSE 'inserted' END AS outcome
FROM written w
UNION ALL
SELECT a.id, a.dedup_key, 'active' FROM active a;

-- name: outbox_yield_to_active
-- Rows just inserted under dedup_active whose key's pending job was published in the same instant (the snapshot saw
-- it pending, the insert found its key free): this statement sees the ledger row the publish wrote, so a key with a
-- live job takes our row back and answers that job, as if the first statement had seen it.
WITH live AS (
    SELECT DISTINCT ON (r.dedup_key) r.dedup_key, r.id
    FROM conveyor.runs r
    WHERE r.job_name = %(job_name)s AND r.dedup_key = ANY(%(dedup_keys)s::text[])
      AND r.finished_at IS NULL AND r.status IN ('waiting', 'pending', 'queued', 'running', 'retrying')
    ORDER BY r.dedup_key, r.created_at DESC
), dropped AS (
    DELETE FROM conveyor.outbox o
    USING live l
    WHERE o.id = ANY(%(ids)s::uuid[]) AND o.job_name = %(job_name)s AND o.dedup_key = l.dedup_key
    RETURNING o.dedup_key
)
SELECT l.dedup_key, l.id FROM live l JOIN dropped d ON d.dedup_key = l.dedup_key;

-- name: outbox_find_dedup_many
SELECT dedup_key, id FROM conveyor.outbox WHERE job_name = %(job_name)s AND dedup_key = ANY(%(dedup_keys)s::text[]);

-- name: outbox_claim_plan
-- Run first in the claim's own transaction (SET LOCAL: gone at its commit). An outbox filled faster than autovacuum
-- analyses it has no statistics, and the planner's default guesses then price a sort of every due row below a walk
-- of outbox_run_at that stops after the batch: the claim's cost grew with the backlog (issue 16). With sorts
-- disabled the only plan without a disabled node delivers rows in run_at order from the index, whatever the
-- statistics say. The claim's other plan choices (the Tid Scan by ctid) never sort.
-- The lease need not survive a database crash, so the claim's commit does not wait for its WAL flush (one fsync
-- less between a job's commit and its SendMessageBatch, and per cycle): a lease lost in a crash only lets another
-- cycle publish the rows again, the duplicate a crash between publish and mark gives anyway. The change is visible
-- to other relays at commit all the same. The mark stays durable.
SET LOCAL enable_sort = off;
SET LOCAL synchronous_commit = off;

-- name: outbox_claim
-- Lease due rows, oldest first, in one short statement: rows another relay is claiming right now are skipped
-- (SKIP LOCKED), rows leased by a relay that is still within its lease are not due. No lock outlives the statement;
-- the lease (claim_token, locked_until) keeps other relays off while this one publishes. Runs after outbox_claim_plan,
-- in the same transaction.
UPDATE conveyor.outbox o
SET claim_token = %(token)s, locked_until = now() + %(lease)s::interval
-- By ctid, so the update visits exactly the rows the index scan locked (a join by id would scan the whole table).
-- The batch also stops before the row that would take its payloads past %(max_bytes)s (the first row is always
-- taken): the relay holds a claimed batch in memory while it publishes it, and 500 payloads near SQS's size limit
-- would not fit its 128 MB. Rows the scan locked beyond that are not leased, and their locks end with the claim.
-- The running sum reads the locked rows in the scan's run_at order (no sort: a subquery keeps its order).
WHERE o.ctid = ANY (ARRAY(
    SELECT ctid
    FROM (
        SELECT ctid, sum(octet_length(payload::text)) OVER (ROWS UNBOUNDED PRECEDING) AS bytes_so_far,
               row_number() OVER (ROWS UNBOUNDED PRECEDING) AS position
        FROM (
            SELECT ctid, payload
            FROM conveyor.outbox
            WHERE run_at <= now()
              AND (next_attempt_at IS NULL OR next_attempt_at <= now())
              AND (locked_until IS NULL OR locked_until <= now())
              AND NOT (queue = ANY(%(skip_queues)s::text[]))
            ORDER BY run_at
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) locked
    ) sized
    WHERE position = 1 OR bytes_so_far <= %(max_bytes)s
))
-- The job id as text: it travels as a message attribute, and the text is what the relay needs of it.
RETURNING o.id, o.job_name, o.queue, o.payload::text AS payload, o.created_at, o.attempt, coalesce(o.job_id, o.id)::text AS job_id,
          o.parent_id, o.scheduled_for;

-- name: outbox_mark_plan
-- First in the mark's transaction. Its commit does not wait for the WAL flush either (as the claim's, see
-- outbox_claim_plan): a mark lost in a database crash is undone whole (the rows are back in the outbox, the ledger
-- rows it wrote are gone, their lease runs out) and the rows are published again: the duplicate a relay crash
-- between publish and mark gives, never a loss, and never a ledger row without its outbox row or the reverse.
SET LOCAL synchronous_commit = off;

-- name: outbox_mark_published
-- Published rows leave the outbox and enter the run ledger (keyed by job id). Deleted whoever holds the lease now:
-- SQS has the message, so a relay that took the row over after our lease ran out must not publish it again. Row ids
-- are never reused, so this deletes exactly the rows that were sent.
-- The job may have a ledger row already: a retry or a flow's parent waiting in the outbox (status retrying or
-- pending: now queued), or a handler that received the message before this statement committed (running or
-- further: kept). A status the job reached some other way (cancelled while this was in flight, succeeded) is never
-- overwritten; the handler acknowledges such a message without running it.
WITH published AS (
    DELETE FROM conveyor.outbox o
    WHERE o.id = ANY(%(ids)b::uuid[])
    RETURNING o.id AS row_id, coalesce(o.job_id, o.id) AS id, o.job_name, o.queue, o.payload, o.dedup_key, o.created_at,
              o.run_at, o.parent_id, o.scheduled_for
)
INSERT INTO conveyor.runs AS r (id, job_name, queue, payload, dedup_key, status, created_at, run_at, published_at,
                                message_id, parent_id, scheduled_for)
SELECT p.id, p.job_name, p.queue, p.payload, p.dedup_key, 'queued', p.created_at, p.run_at, now(), m.message_id,
       p.parent_id, p.scheduled_for
FROM published p
-- Arrays dumped in binary: 500 uuids dumped as text were a tenth of a relay cycle's Python time.
JOIN unnest(%(ids)b::uuid[], %(message_ids)b::text[]) AS m(id, message_id) ON m.id = p.row_id
-- In id order, as every batch statement on conveyor.runs locks (shared/ledger/record.sql, runs_start): a handler that
-- received some of these jobs before this mark commits starts them in the same order, and waits instead of deadlocking.
ORDER BY p.id
ON CONFLICT (id) DO UPDATE
SET status = CASE WHEN r.status IN ('pending', 'retrying') THEN 'queued' ELSE r.status END,
    queue = EXCLUDED.queue,
    run_at = EXCLUDED.run_at,
    published_at = EXCLUDED.published_at,
    message_id = CASE WHEN r.status IN ('pending', 'retrying') THEN EXCLUDED.message_id ELSE coalesce(r.message_id, EXCLUDED.message_id) END,
    dedup_key = coalesce(r.dedup_key, EXCLUDED.dedup_key),
    parent_id = coalesce(r.parent_id, EXCLUDED.parent_id),
    scheduled_for = coalesce(r.scheduled_for, EXCLUDED.scheduled_for),
    updated_at = now();

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
              o.publish_attempts + 1 AS attempts, o.attempt, f.error, o.parent_id, o.scheduled_for
), buried AS (
    -- parent_id and scheduled_for travel along: a flow counts a child the relay gave up on as failed.
    INSERT INTO conveyor.outbox_dead (id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, publish_attempts,
                                      attempt, last_error, parent_id, scheduled_for)
    SELECT id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, attempts, attempt, error, parent_id,
           scheduled_for
    FROM dead
    RETURNING id
), ledger_failed AS (
    -- A job that already has its ledger row (a retry held here, a released flow parent) ends there as failed: it
    -- would otherwise read 'pending' forever, and hold its flow and its schedule's overlap check.
    UPDATE conveyor.runs r
    SET status = 'failed', finished_at = now(), last_error_type = 'PublishFailed', last_error = left(d.error, 4000),
        reason = 'the relay could not publish it; `conveyor outbox --failed` lists it', updated_at = now()
    FROM dead d
    WHERE d.job_id IS NOT NULL AND r.id = d.job_id AND r.finished_at IS NULL
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

-- name: outbox_lock_flow_parents
-- The flow parents of refused rows, locked in id order before any of them is given up on: the trigger on
-- conveyor.outbox_dead locks one parent per dead child, in whatever order the rows come, and two relays giving up
-- on children of the same two flows would otherwise deadlock (and the rollback would undo their published marks
-- too). The handler runtime takes parent locks in the same order (shared.ledger.flows.lock_parents).
SELECT p.id
FROM conveyor.runs p
WHERE p.id IN (SELECT o.parent_id FROM conveyor.outbox o WHERE o.id = ANY(%(ids)s::uuid[]) AND o.parent_id IS NOT NULL)
ORDER BY p.id
FOR UPDATE OF p;

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
