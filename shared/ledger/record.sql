-- What the handler runtime writes to the run ledger. Loaded by shared.sqlfile; each block starts with a "-- name:" line.
-- The batch statements take their arrays in binary (%(x)b): psycopg's text rendering of a dozen arrays cost more
-- than the statement itself.

-- name: runs_start
-- Take the runs of one batch, one statement for the whole batch. A run is taken (status running, attempt + 1, a new
-- run token, stale_at) when it is waiting to run: queued, retrying, pending (a retry or a flow's parent in the
-- outbox whose new message outran the relay's mark; the old message of a retry moved to the outbox is not taken),
-- or running past its stale_at (the worker died: this delivery takes it over and counts the lost run as failed).
-- Anything else is returned unchanged, and the caller sees from the token that it did not take it: succeeded or
-- cancelled (acknowledge without running), running elsewhere (come back later), dead (a late duplicate of the
-- message that went to the DLQ; a redriven copy is restarted by runs_restart).
-- A message without a ledger row (a foreign producer's, or one that outran the relay's mark) gets one here.
INSERT INTO conveyor.runs AS r (id, job_name, queue, payload, status, created_at, run_at, published_at, message_id,
                                attempt, first_started_at, last_started_at, stale_at, run_token, parent_id,
                                scheduled_for, batch_position, updated_at)
SELECT i.id, i.job_name, i.queue, i.payload::json, 'running', coalesce(i.enqueued_at, i.sent_at, now()),
       coalesce(i.sent_at, now()), i.sent_at, i.message_id, 1, now(), now(),
       now() + i.stale_after * interval '1 second', i.token, i.parent_id, i.scheduled_for, i.position, now()
FROM unnest(%(ids)b::uuid[], %(tokens)b::uuid[], %(job_names)b::text[], %(queues)b::text[], %(payloads)b::text[],
            %(message_ids)b::text[], %(enqueued_at)b::timestamptz[], %(sent_at)b::timestamptz[],
            %(stale_after)b::float8[], %(parent_ids)b::uuid[], %(scheduled_for)b::timestamptz[], %(positions)b::int[])
     AS i(id, token, job_name, queue, payload, message_id, enqueued_at, sent_at, stale_after, parent_id, scheduled_for,
          position)
-- Rows are inserted, and existing ones locked, in this order: by id, as every batch statement on conveyor.runs
-- locks, so two batches holding the same jobs (a message delivered twice, a relay's mark racing the handler) wait
-- for each other instead of deadlocking (tests/integration/test_ledger_lock_order.py).
ORDER BY i.id
ON CONFLICT (id) DO UPDATE
SET (status, attempt, run_token, stale_at, last_started_at, first_started_at, message_id, last_error_type, last_error,
     batch_position) =
    -- A run taken over from a dead worker counts as a failed attempt only if it was first in its batch: the others
    -- may never have started (the worker died on a batch-mate), so they get their attempt number again.
    (SELECT 'running',
            CASE WHEN r.status = 'running' AND coalesce(r.batch_position, 0) > 0 THEN r.attempt ELSE r.attempt + 1 END,
            EXCLUDED.run_token, EXCLUDED.stale_at, now(),
            coalesce(r.first_started_at, now()), EXCLUDED.message_id,
            CASE WHEN r.status = 'running' THEN 'Abandoned' ELSE r.last_error_type END,
            CASE WHEN r.status = 'running'
                 THEN 'attempt ' || r.attempt || ' reported no outcome by ' || r.stale_at || ' (its worker died or overran its timeout)'
                 ELSE r.last_error END,
            EXCLUDED.batch_position
     WHERE r.status IN ('queued', 'retrying') OR (r.status = 'running' AND r.stale_at <= now())
        OR (r.status = 'pending' AND r.message_id IS DISTINCT FROM EXCLUDED.message_id)
     UNION ALL
     SELECT r.status, r.attempt, r.run_token, r.stale_at, r.last_started_at, r.first_started_at, r.message_id,
            r.last_error_type, r.last_error, r.batch_position
     WHERE NOT (r.status IN ('queued', 'retrying') OR (r.status = 'running' AND r.stale_at <= now())
                OR (r.status = 'pending' AND r.message_id IS DISTINCT FROM EXCLUDED.message_id))),
    parent_id = coalesce(r.parent_id, EXCLUDED.parent_id),
    scheduled_for = coalesce(r.scheduled_for, EXCLUDED.scheduled_for),
    -- The abandoned attempt that counts as failed (first in its batch) joins the failed attempts' history.
    attempts = CASE WHEN r.status = 'running' AND r.stale_at <= now() AND coalesce(r.batch_position, 0) = 0
                    THEN conveyor.attempts_append(r.attempts, r.attempt, r.last_started_at, r.stale_at, 'abandoned',
                             'Abandoned', 'attempt ' || r.attempt || ' reported no outcome by ' || r.stale_at
                                          || ' (its worker died or overran its timeout)')
                    ELSE r.attempts END,
    updated_at = now()
RETURNING r.id, r.status, r.attempt, r.run_token, r.stale_at, r.parent_id, r.scheduled_for;

-- name: runs_restart
-- A copy brought back from the dead-letter queue (a redrive): the job starts over with a fresh attempt count.
-- The rows are locked by id first (the locked CTE), as runs_start inserts them: an UPDATE … FROM locks in whatever
-- order its join plan visits them.
WITH locked AS (
    SELECT id FROM conveyor.runs WHERE id = ANY(%(ids)b::uuid[]) ORDER BY id FOR UPDATE
)
UPDATE conveyor.runs r
SET status = 'running', attempt = 1, run_token = i.token, stale_at = now() + i.stale_after * interval '1 second',
    last_started_at = now(), finished_at = NULL, message_id = i.message_id, updated_at = now()
FROM unnest(%(ids)b::uuid[], %(tokens)b::uuid[], %(message_ids)b::text[], %(stale_after)b::float8[])
     AS i(id, token, message_id, stale_after)
WHERE r.id = i.id AND r.id IN (SELECT id FROM locked) AND r.status IN ('dead', 'failed')
RETURNING r.id, r.status, r.attempt, r.run_token, r.stale_at, r.parent_id, r.scheduled_for;

-- name: runs_finish
-- The outcomes of one batch, one statement. Only the holder of the run's current token reports: a worker whose run
-- was taken over (it overran its stale_at) changes nothing. A run its own transaction already marked succeeded
-- (ctx.transaction) keeps that status; its result and progress are still written. 'queued' means not started (too
-- little time left in the invocation): the attempt the start statement counted is given back.
-- A run the start statement could not record (the database was unreachable then) reports without a token: it may
-- only end a run still waiting to run (queued, retrying), with the attempt its message counted.
-- The rows are locked by id first (the locked CTE), as runs_start locks them; see there.
WITH locked AS (
    SELECT id FROM conveyor.runs WHERE id = ANY(%(ids)b::uuid[]) ORDER BY id FOR UPDATE
)
UPDATE conveyor.runs r
SET status = CASE WHEN r.status = 'running' OR o.token IS NULL THEN o.status ELSE r.status END,
    attempt = CASE WHEN o.token IS NULL THEN greatest(r.attempt, o.attempt)
                   WHEN r.status = 'running' AND o.status = 'queued' THEN r.attempt - 1 ELSE r.attempt END,
    finished_at = CASE WHEN (r.status = 'running' OR o.token IS NULL) AND o.status IN ('succeeded', 'dead') THEN now()
                       ELSE r.finished_at END,
    stale_at = CASE WHEN r.status = 'running' OR o.token IS NULL THEN NULL ELSE r.stale_at END,
    -- The start statement stamps the batch's start; each record's own start is known only now.
    first_started_at = CASE WHEN r.first_started_at = r.last_started_at
                            THEN CASE WHEN o.status = 'queued' AND r.attempt = 1 THEN NULL ELSE coalesce(o.started_at, r.first_started_at) END
                            ELSE r.first_started_at END,
    last_started_at = coalesce(o.started_at, r.last_started_at),
    last_error_type = coalesce(o.error_type, r.last_error_type),
    last_error = coalesce(left(o.error, 4000), r.last_error),
    result = coalesce(o.result::json, r.result),
    progress = CASE WHEN o.progress IS NULL THEN r.progress ELSE greatest(coalesce(r.progress, 0), o.progress) END,
    progress_message = coalesce(left(o.progress_message, 500), r.progress_message),
    -- A failing attempt (retrying, dead, failed, or pending with an error: its retry waits in the outbox) appends an
    -- entry to the run's history (conveyor.attempts_append keeps the last 25); a success writes nothing here.
    attempts = CASE WHEN (r.status = 'running' OR o.token IS NULL)
                         AND (o.status IN ('retrying', 'dead', 'failed') OR (o.status = 'pending' AND o.error_type IS NOT NULL))
                    THEN conveyor.attempts_append(
                             r.attempts, CASE WHEN o.token IS NULL THEN greatest(r.attempt, o.attempt) ELSE r.attempt END,
                             coalesce(o.started_at, r.last_started_at), now(),
                             CASE WHEN o.status = 'pending' THEN 'retrying' ELSE o.status END, o.error_type, o.error)
                    ELSE r.attempts END,
    updated_at = now()
FROM unnest(%(ids)b::uuid[], %(tokens)b::uuid[], %(statuses)b::text[], %(started_at)b::timestamptz[],
            %(error_types)b::text[], %(errors)b::text[], %(results)b::text[], %(progress)b::int[],
            %(progress_messages)b::text[], %(attempts)b::int[])
     AS o(id, token, status, started_at, error_type, error, result, progress, progress_message, attempt)
WHERE r.id = o.id AND r.id IN (SELECT id FROM locked)
  AND (r.run_token = o.token OR (o.token IS NULL AND o.status <> 'queued' AND r.status IN ('queued', 'retrying')))
RETURNING r.id, r.status;

-- name: run_succeeded
-- Inside the job's own transaction (ctx.transaction): the run is succeeded if and only if that transaction commits.
-- Matches nothing when another delivery took the run over, and the caller then rolls the job's work back.
UPDATE conveyor.runs
SET status = 'succeeded', finished_at = now(), stale_at = NULL, updated_at = now(),
    result = coalesce(%(result)s::json, result),
    progress = CASE WHEN %(progress)s::int IS NULL THEN progress ELSE greatest(coalesce(progress, 0), %(progress)s::int) END,
    progress_message = coalesce(left(%(progress_message)s::text, 500), progress_message)
WHERE id = %(id)s AND run_token = %(token)s AND status = 'running'
RETURNING id;

-- name: run_progress
-- Progress never goes backwards, and only the current holder of the run writes it.
UPDATE conveyor.runs
SET progress = greatest(coalesce(progress, 0), %(progress)s::int),
    progress_message = coalesce(left(%(progress_message)s::text, 500), progress_message),
    updated_at = now()
WHERE id = %(id)s AND run_token = %(token)s AND status = 'running';

-- name: run_succeeded_unfenced
-- ctx.transaction() of a run the start statement could not record: the run is marked succeeded in the job's own
-- transaction only if it has not ended (or is not running elsewhere) meanwhile; otherwise nothing is returned and
-- the job's work is rolled back. Keeps "commits once" when the ledger missed the start.
INSERT INTO conveyor.runs AS r (id, job_name, queue, payload, status, created_at, run_at, message_id, attempt,
                                first_started_at, last_started_at, finished_at, result, parent_id, scheduled_for,
                                updated_at)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::json, 'succeeded', now(), now(), %(message_id)s, %(attempt)s,
        now(), now(), now(), %(result)s::json, %(parent_id)s, %(scheduled_for)s, now())
ON CONFLICT (id) DO UPDATE
SET status = 'succeeded', finished_at = now(), stale_at = NULL, attempt = greatest(r.attempt, EXCLUDED.attempt),
    last_started_at = now(), first_started_at = coalesce(r.first_started_at, now()),
    result = coalesce(EXCLUDED.result, r.result), parent_id = coalesce(r.parent_id, EXCLUDED.parent_id),
    scheduled_for = coalesce(r.scheduled_for, EXCLUDED.scheduled_for), updated_at = now()
WHERE r.status IN ('pending', 'queued', 'retrying', 'dead', 'failed') OR (r.status = 'running' AND r.stale_at < now())
RETURNING r.id;
