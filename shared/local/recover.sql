-- What the local runtime does when it starts its own, empty moto: the jobs whose messages were on the old one.

-- name: republish_lost
-- Every job the ledger says has a message on SQS (queued; retrying, its next attempt hidden on the queue; running,
-- its message in flight with a worker that is gone) and that has no row in the outbox goes back to the outbox, as a
-- held retry does: a new row carrying the job's id in job_id, due now, with its payload, queue, flow parent and
-- period. No dedup key on the row (as retry_enqueue): the ledger row keeps the job's, and stays live (pending,
-- finished_at NULL), so dedup_active still sees the job; a new pending job holding the key must not block it.
-- Not an operator retry: the attempts already run still count. runs_start adds one when the republished message
-- starts, so the ledger keeps the attempt count, except that a running job's lost run is settled as a takeover
-- would (runs_start): counted, and recorded as abandoned, when it was first in its batch; given back when it was a
-- batch-mate that may never have started. A job whose attempts are all used thus starts past max_attempts, and the
-- handler sends it to its DLQ instead of running it. The outbox row's attempt is the one the message starts as (the
-- envelope's, used when the ledger cannot be reached). Insert first, then reopen only the rows inserted: a job
-- that got an outbox row meanwhile (ON CONFLICT on outbox_job) is left as it is.
WITH stranded AS (
    SELECT r.id, r.job_name, r.queue, r.payload, r.created_at, r.parent_id, r.scheduled_for,
           CASE WHEN r.status = 'running' AND coalesce(r.batch_position, 0) > 0 THEN r.attempt
                ELSE r.attempt + 1 END AS next_attempt
    FROM conveyor.runs r
    WHERE r.status IN ('queued', 'retrying', 'running')
      AND NOT EXISTS (SELECT 1 FROM conveyor.outbox o WHERE o.job_id = r.id OR (o.id = r.id AND o.job_id IS NULL))
    FOR UPDATE OF r
), enqueued AS (
    INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, attempt, parent_id,
                                 scheduled_for)
    SELECT gen_random_uuid(), s.id, s.job_name, s.queue, s.payload, statement_timestamp(), s.created_at,
           s.next_attempt, s.parent_id, s.scheduled_for
    FROM stranded s
    ON CONFLICT (job_id) WHERE job_id IS NOT NULL DO NOTHING
    RETURNING job_id, attempt
)
UPDATE conveyor.runs r
SET status = 'pending', attempt = e.attempt - 1, stale_at = NULL, run_token = NULL, reason = %(reason)s,
    last_error_type = CASE WHEN r.status = 'running' AND coalesce(r.batch_position, 0) = 0
                           THEN 'Abandoned' ELSE r.last_error_type END,
    last_error = CASE WHEN r.status = 'running' AND coalesce(r.batch_position, 0) = 0
                      THEN 'attempt ' || r.attempt || ' was running when the local runtime stopped; '
                           || 'its message went with the local SQS'
                      ELSE r.last_error END,
    attempts = CASE WHEN r.status = 'running' AND coalesce(r.batch_position, 0) = 0
                    THEN conveyor.attempts_append(r.attempts, r.attempt, r.last_started_at, now(), 'abandoned',
                             'Abandoned', 'attempt ' || r.attempt || ' was running when the local runtime stopped; '
                                          || 'its message went with the local SQS')
                    ELSE r.attempts END,
    updated_at = now()
FROM enqueued e
WHERE r.id = e.job_id
RETURNING r.id;
