-- The relay claims rows with a lease instead of holding row locks across SQS calls; rows that can never be
-- published leave the claim path; the outbox keeps the exact JSON text the producer validated; SQL producers get
-- the same rules as Python ones.

-- The payload is stored as `json` (the text as given), not `jsonb`: the relay sends exactly the bytes enqueue
-- validated and measured. jsonb re-renders numbers (1e+300 becomes 301 digits) and spacing, so a body that fitted
-- SQS could grow past its limit between enqueue and publish. Writing json also skips jsonb's binary conversion.
ALTER TABLE conveyor.outbox ALTER COLUMN payload TYPE json USING payload::json;

-- A claim is a lease: the relay marks rows with a token and a deadline in one short statement, publishes with no
-- transaction open, then deletes (published) or releases (refused) them. A relay that dies mid-publish leaves rows
-- leased; they become claimable again when the lease ends (a duplicate message, never a lost job).
ALTER TABLE conveyor.outbox
    ADD COLUMN claim_token  uuid,
    ADD COLUMN locked_until timestamptz;

-- A retry that waits here because SQS cannot hide a message that long (a RetryAfter over SQS's 12 hours) is a row
-- of its own (its own row id, so publishing or dead-lettering one row never touches another) that carries the job's
-- id in job_id and the attempt its message starts at: the job keeps its identity and its attempt count, and still
-- reaches the dead-letter queue after its last attempt. For every other row job_id is NULL: the row id is the job id.
ALTER TABLE conveyor.outbox
    ADD COLUMN job_id  uuid,
    ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1);
-- One waiting retry per (job, attempt): the original message delivered twice adds no second retry.
CREATE UNIQUE INDEX outbox_retry ON conveyor.outbox (job_id, attempt) WHERE job_id IS NOT NULL;

-- The same key rules as enqueue() in Python, for every writer (conveyor.add_job, hand-written INSERTs). NOT VALID:
-- rows already pending are not re-checked, so the migration cannot fail on old data.
ALTER TABLE conveyor.outbox
    ADD CONSTRAINT outbox_dedup_key_length CHECK (dedup_key IS NULL OR char_length(dedup_key) BETWEEN 1 AND 512) NOT VALID,
    ADD CONSTRAINT outbox_run_at_finite CHECK (isfinite(run_at)) NOT VALID;

-- Rows the relay gave up on: SQS refused them permanently (too large, invalid characters) or every one of a bounded
-- number of attempts failed (a queue that no longer exists). They are out of the claim path, keep the reason, and
-- go back with conveyor.requeue_dead_outbox() (or `conveyor outbox --requeue`) once the cause is fixed.
CREATE TABLE conveyor.outbox_dead (
    id               uuid PRIMARY KEY,
    job_id           uuid,
    job_name         text NOT NULL,
    queue            text NOT NULL,
    payload          json NOT NULL,
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    dedup_key        text,
    publish_attempts integer NOT NULL,
    attempt          integer NOT NULL DEFAULT 1,
    last_error       text NOT NULL,
    failed_at        timestamptz NOT NULL DEFAULT now()
);

-- The ledger keeps the payload as text too: moving a row there must never fail on a value jsonb rejects (a
-- hand-written INSERT with "\u0000"), or the relay would publish the row again after every lease.
ALTER TABLE conveyor.runs ALTER COLUMN payload TYPE json USING payload::json;

CREATE INDEX outbox_dead_failed_at ON conveyor.outbox_dead (failed_at);

-- Jobs whose queue the Python registry picks from the payload (a route function). SQL cannot run that function,
-- so conveyor.add_job() asks its callers to name the queue for these jobs rather than guess the default.
ALTER TABLE conveyor.job_types ADD COLUMN routed boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION conveyor.add_job(
    job_name  text,
    payload   jsonb DEFAULT '{}'::jsonb,
    queue     text DEFAULT NULL,
    run_at    timestamptz DEFAULT NULL,
    dedup_key text DEFAULT NULL
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

    -- A pending job with the same key wins. It can be published (deleted from the outbox) between our INSERT and
    -- the SELECT that looks for it; the key is then free again, so try again, as enqueue() does in Python.
    FOR attempt IN 1..3 LOOP
        v_id := gen_random_uuid();
        INSERT INTO conveyor.outbox AS o (id, job_name, queue, payload, run_at, dedup_key)
        VALUES (v_id, add_job.job_name, v_queue, v_body::json, coalesce(add_job.run_at, statement_timestamp()),
                add_job.dedup_key)
        ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING;
        IF FOUND THEN
            RETURN v_id;
        END IF;
        SELECT o.id INTO v_id FROM conveyor.outbox o
        WHERE o.job_name = add_job.job_name AND o.dedup_key = add_job.dedup_key;
        IF FOUND THEN
            RETURN v_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'conveyor.add_job: job "%" with dedup_key "%" kept conflicting with jobs that vanished before they could be read',
        add_job.job_name, add_job.dedup_key USING ERRCODE = '40001', HINT = 'enqueue again';
END;
$$;

-- Put rows the relay gave up on back in the outbox, due now, with a fresh attempt count. Returns how many moved.
-- Of several dead rows with one dedup key, the newest goes back (the key allows one pending job); a row whose key a
-- pending job holds stays where it is (enqueue would have returned that job). Both stay listed for the operator.
CREATE FUNCTION conveyor.requeue_dead_outbox(ids uuid[] DEFAULT NULL) RETURNS integer
LANGUAGE sql
AS $$
    WITH chosen AS (
        SELECT DISTINCT ON (d.job_name, coalesce(d.dedup_key, d.id::text)) d.id
        FROM conveyor.outbox_dead d
        WHERE (requeue_dead_outbox.ids IS NULL OR d.id = ANY (requeue_dead_outbox.ids))
          AND NOT EXISTS (
              SELECT 1 FROM conveyor.outbox o
              WHERE o.job_name = d.job_name AND o.dedup_key = d.dedup_key
          )
          AND NOT EXISTS (
              SELECT 1 FROM conveyor.outbox o WHERE o.job_id = d.job_id AND o.attempt = d.attempt
          )
        ORDER BY d.job_name, coalesce(d.dedup_key, d.id::text), d.failed_at DESC
    ), moved AS (
        DELETE FROM conveyor.outbox_dead d
        USING chosen c
        WHERE d.id = c.id
        RETURNING d.*
    ), inserted AS (
        INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, attempt)
        SELECT id, job_id, job_name, queue, payload, statement_timestamp(), created_at, dedup_key, attempt FROM moved
        RETURNING 1
    )
    SELECT count(*)::integer FROM inserted;
$$;
