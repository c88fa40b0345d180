-- Fixes to the run ledger found in review, and the cost of its status writes.

-- One waiting outbox row per job id (a retry held in the outbox, a released flow parent): the relay's mark upserts
-- the ledger row by job id, and two rows of one job in one claim would make that statement fail for the whole batch.
-- A second long RetryAfter for a job whose first one already waits (its worker died before the ledger heard of the
-- first) adds nothing.
-- A database that ran the earlier code may hold such a second row (a worker killed after holding a long RetryAfter
-- in the outbox, its message run again): keep each job's latest attempt, the one its ledger counts on from; the job
-- itself is not lost.
DELETE FROM conveyor.outbox o
USING conveyor.outbox later
WHERE o.job_id IS NOT NULL AND later.job_id = o.job_id
  AND (later.attempt, later.id) > (o.attempt, o.id);
DROP INDEX conveyor.outbox_retry;
CREATE UNIQUE INDEX outbox_job ON conveyor.outbox (job_id) WHERE job_id IS NOT NULL;

-- Where the run sat in its batch (0 = first). Records of a batch are taken together but run one after another: when
-- the worker dies, only the first surely started, so only its lost run counts as an attempt when the job is taken
-- over; the others get their attempt back (a job that kills its worker still reaches its DLQ: sooner or later it is
-- first in its batch, and the queue's redrive policy bounds it anyway).
ALTER TABLE conveyor.runs ADD COLUMN batch_position smallint;

-- Live runs, indexed by a column written once per job (finished_at: set when the run ends) instead of status, which
-- every start, retry and publish changes: with status in the predicate each of those updates had to touch every
-- index of the table (no HOT update). Readers re-check the status on the row. Room on each page for HOT updates.
DROP INDEX conveyor.runs_live;
CREATE INDEX runs_live ON conveyor.runs (job_name, dedup_key) WHERE finished_at IS NULL;
ALTER TABLE conveyor.runs SET (fillfactor = 80);

-- add_job's dedup_active check, as in 0004, reading the new index.
CREATE OR REPLACE FUNCTION conveyor.add_job(
    job_name     text,
    payload      jsonb DEFAULT '{}'::jsonb,
    queue        text DEFAULT NULL,
    run_at       timestamptz DEFAULT NULL,
    dedup_key    text DEFAULT NULL,
    dedup        text DEFAULT 'keep',
    dedup_active boolean DEFAULT false
) RETURNS uuid
LANGUAGE plpgsql
AS $$
-- Parameters share names with outbox columns (a friendlier call signature); the ON CONFLICT target means columns.
#variable_conflict use_column
DECLARE
    v_type conveyor.job_types%ROWTYPE;
    v_queue text;
    v_id uuid;
    v_body text;
    v_found uuid;
    v_outcome text;
    v_live uuid;
BEGIN
    SELECT * INTO v_type FROM conveyor.job_types t WHERE t.name = add_job.job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conveyor.add_job: unknown job "%"', add_job.job_name
            USING ERRCODE = '22023', HINT = 'register it in the job registry and run `conveyor migrate`';
    END IF;
    IF add_job.queue IS NULL AND v_type.routed THEN
        RAISE EXCEPTION 'conveyor.add_job: job "%" picks its queue from the payload in Python; name it with queue => one of %',
            add_job.job_name, v_type.queues USING ERRCODE = '22023';
    END IF;
    v_queue := coalesce(add_job.queue, v_type.default_queue);
    IF NOT v_queue = ANY (v_type.queues) THEN
        RAISE EXCEPTION 'conveyor.add_job: job "%" cannot go to queue "%"; its queues are %',
            add_job.job_name, v_queue, v_type.queues USING ERRCODE = '22023';
    END IF;
    IF add_job.payload IS NULL OR jsonb_typeof(add_job.payload) <> 'object' THEN
        RAISE EXCEPTION 'conveyor.add_job: payload must be a JSON object' USING ERRCODE = '22023';
    END IF;
    -- The text stored is the text the relay sends, so this is the exact size SQS will see.
    v_body := add_job.payload::text;
    IF octet_length(v_body) > conveyor.max_payload_bytes() THEN
        RAISE EXCEPTION 'conveyor.add_job: payload is % bytes; the limit is % (store large data elsewhere and pass a reference)',
            octet_length(v_body), conveyor.max_payload_bytes() USING ERRCODE = '54000';
    END IF;
    IF add_job.dedup_key IS NOT NULL AND NOT char_length(add_job.dedup_key) BETWEEN 1 AND 512 THEN
        RAISE EXCEPTION 'conveyor.add_job: dedup_key must be 1 to 512 characters, got %', char_length(add_job.dedup_key)
            USING ERRCODE = '22023';
    END IF;
    IF add_job.run_at IS NOT NULL AND NOT isfinite(add_job.run_at) THEN
        RAISE EXCEPTION 'conveyor.add_job: run_at must be a finite time, got %', add_job.run_at USING ERRCODE = '22023';
    END IF;
    IF add_job.dedup IS NULL OR add_job.dedup NOT IN ('keep', 'replace') THEN
        RAISE EXCEPTION 'conveyor.add_job: dedup must be ''keep'' or ''replace'', got %', coalesce(quote_literal(add_job.dedup), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF add_job.dedup_active IS NULL THEN
        RAISE EXCEPTION 'conveyor.add_job: dedup_active must be true or false, got NULL' USING ERRCODE = '22023';
    END IF;

    -- Each statement below takes a new snapshot (READ COMMITTED): what one statement found gone, the next one sees.
    FOR attempt IN 1..3 LOOP
        v_id := gen_random_uuid();
        IF add_job.dedup_key IS NULL OR (add_job.dedup = 'keep' AND NOT add_job.dedup_active) THEN
            -- The common case, one plain INSERT. A pending job with the same key wins.
            INSERT INTO conveyor.outbox AS o (id, job_name, queue, payload, run_at, dedup_key)
            VALUES (v_id, add_job.job_name, v_queue, v_body::json, coalesce(add_job.run_at, statement_timestamp()),
                    add_job.dedup_key)
            ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING;
            IF FOUND THEN
                RETURN v_id;
            END IF;
        ELSE
            -- As shared/outbox/queries.sql outbox_replace_many / outbox_insert_many_unless_active, for one row: a
            -- live job of the ledger holding the key (dedup_active, no pending job holding it) wins; otherwise the
            -- row is inserted, or under 'replace' the pending job is updated in place (or, if a relay has claimed
            -- it, given this new id and published again as a job of its own).
            IF add_job.dedup = 'replace' THEN
                WITH held AS (
                    SELECT o.dedup_key FROM conveyor.outbox o
                    WHERE add_job.dedup_active AND o.job_name = add_job.job_name AND o.dedup_key = add_job.dedup_key
                ), active AS (
                    SELECT r.id FROM conveyor.runs r
                    WHERE add_job.dedup_active AND NOT EXISTS (SELECT 1 FROM held)
                      AND r.job_name = add_job.job_name AND r.dedup_key = add_job.dedup_key
                      AND r.finished_at IS NULL AND r.status IN ('waiting', 'pending', 'queued', 'running', 'retrying')
                    ORDER BY r.created_at DESC
                    LIMIT 1
                ), written AS (
                    INSERT INTO conveyor.outbox AS o (id, job_name, queue, payload, run_at, dedup_key)
                    SELECT v_id, add_job.job_name, v_queue, v_body::json, coalesce(add_job.run_at, statement_timestamp()),
                           add_job.dedup_key
                    WHERE NOT EXISTS (SELECT 1 FROM active)
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
                    RETURNING o.id, o.xmax = 0 AS inserted
                )
                SELECT w.id, CASE WHEN NOT w.inserted THEN 'replaced' WHEN EXISTS (SELECT 1 FROM held) THEN 'raced' ELSE 'inserted' END
                FROM written w
                UNION ALL
                SELECT a.id, 'active' FROM active a
                INTO v_found, v_outcome;
            ELSE
                WITH held AS (
                    SELECT o.dedup_key FROM conveyor.outbox o
                    WHERE o.job_name = add_job.job_name AND o.dedup_key = add_job.dedup_key
                ), active AS (
                    SELECT r.id FROM conveyor.runs r
                    WHERE NOT EXISTS (SELECT 1 FROM held)
                      AND r.job_name = add_job.job_name AND r.dedup_key = add_job.dedup_key
                      AND r.finished_at IS NULL AND r.status IN ('waiting', 'pending', 'queued', 'running', 'retrying')
                    ORDER BY r.created_at DESC
                    LIMIT 1
                ), written AS (
                    INSERT INTO conveyor.outbox AS o (id, job_name, queue, payload, run_at, dedup_key)
                    SELECT v_id, add_job.job_name, v_queue, v_body::json, coalesce(add_job.run_at, statement_timestamp()),
                           add_job.dedup_key
                    WHERE NOT EXISTS (SELECT 1 FROM active)
                    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
                    RETURNING o.id
                )
                SELECT w.id, CASE WHEN EXISTS (SELECT 1 FROM held) THEN 'raced' ELSE 'inserted' END FROM written w
                UNION ALL
                SELECT a.id, 'active' FROM active a
                INTO v_found, v_outcome;
            END IF;
            IF v_outcome = 'raced' THEN
                -- The pending job seen holding the key was published before the INSERT: this statement sees its
                -- ledger row. A live job with the key takes the place of the row just written.
                SELECT r.id INTO v_live FROM conveyor.runs r
                WHERE r.job_name = add_job.job_name AND r.dedup_key = add_job.dedup_key
                  AND r.finished_at IS NULL AND r.status IN ('waiting', 'pending', 'queued', 'running', 'retrying')
                ORDER BY r.created_at DESC
                LIMIT 1;
                IF FOUND THEN
                    DELETE FROM conveyor.outbox o WHERE o.id = v_found;
                    RETURN v_live;
                END IF;
                RETURN v_found;
            ELSIF v_outcome IS NOT NULL THEN
                RETURN v_found;
            END IF;
        END IF;
        -- A pending job holds the key ('keep'). It can be published (deleted from the outbox) between the INSERT and
        -- this look-up; the key is then free again, so try again.
        SELECT o.id INTO v_found FROM conveyor.outbox o
        WHERE o.job_name = add_job.job_name AND o.dedup_key = add_job.dedup_key;
        IF FOUND THEN
            RETURN v_found;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'conveyor.add_job: job "%" with dedup_key "%" kept conflicting with jobs that vanished before they could be read',
        add_job.job_name, add_job.dedup_key USING ERRCODE = '40001', HINT = 'enqueue again';
END;
$$;


-- Requeue dead outbox rows as in 0005, one row per job id (the index above). A row with a job_id is a job whose
-- ledger row the relay ended 'failed' when it gave up (a retry held in the outbox, a released flow parent): it is
-- reopened as 'pending', or the handler would acknowledge the requeued message unrun as "already failed".
CREATE OR REPLACE FUNCTION conveyor.requeue_dead_outbox(ids uuid[] DEFAULT NULL) RETURNS integer
LANGUAGE sql
AS $$
    WITH chosen AS (
        SELECT DISTINCT ON (d.job_name, coalesce(d.dedup_key, d.job_id::text, d.id::text)) d.id
        FROM conveyor.outbox_dead d
        WHERE (requeue_dead_outbox.ids IS NULL OR d.id = ANY (requeue_dead_outbox.ids))
          AND NOT EXISTS (
              SELECT 1 FROM conveyor.outbox o
              WHERE o.job_name = d.job_name AND o.dedup_key = d.dedup_key
          )
          AND NOT EXISTS (SELECT 1 FROM conveyor.outbox o WHERE o.job_id = d.job_id)
        ORDER BY d.job_name, coalesce(d.dedup_key, d.job_id::text, d.id::text), d.failed_at DESC
    ), moved AS (
        DELETE FROM conveyor.outbox_dead d
        USING chosen c
        WHERE d.id = c.id
        RETURNING d.*
    ), inserted AS (
        INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, attempt,
                                     parent_id, scheduled_for)
        SELECT id, job_id, job_name, queue, payload, statement_timestamp(), created_at, dedup_key, attempt,
               parent_id, scheduled_for
        FROM moved
        RETURNING 1
    ), reopened AS (
        UPDATE conveyor.runs r
        SET status = 'pending', finished_at = NULL, updated_at = now()
        FROM moved m
        WHERE m.job_id IS NOT NULL AND r.id = m.job_id AND r.status = 'failed' AND r.last_error_type = 'PublishFailed'
    )
    SELECT count(*)::integer FROM inserted;
$$;
