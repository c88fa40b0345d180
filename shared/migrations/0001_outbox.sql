-- Conveyor's schema: the transactional outbox, the run ledger, and the job catalogue that SQL producers use.

CREATE TYPE conveyor.run_status AS ENUM (
    'pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead'
);

-- Which jobs exist and where they go, synced from the Python registry by `conveyor migrate`, so that
-- conveyor.add_job() can route jobs enqueued by non-Python producers.
CREATE TABLE conveyor.job_types (
    name          text PRIMARY KEY,
    default_queue text NOT NULL,
    queues        text[] NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The hot outbox: only jobs not yet published. The relay deletes rows as it publishes them (moving them to
-- conveyor.runs in the same transaction), so the claim scan stays proportional to what is pending and vacuum
-- keeps up under a long load.
CREATE TABLE conveyor.outbox (
    id               uuid PRIMARY KEY,
    job_name         text NOT NULL,
    queue            text NOT NULL,
    payload          jsonb NOT NULL,
    run_at           timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    dedup_key        text,
    publish_attempts integer NOT NULL DEFAULT 0,
    last_error       text,
    -- Set when SQS refused the row: it waits until then. run_at keeps the time the job was due, so the relay
    -- lag (oldest due row) keeps counting while publishing fails.
    next_attempt_at  timestamptz
);

CREATE INDEX outbox_run_at ON conveyor.outbox (run_at);
-- At most one pending job per (job, dedup key).
CREATE UNIQUE INDEX outbox_dedup ON conveyor.outbox (job_name, dedup_key) WHERE dedup_key IS NOT NULL;

-- The run ledger: one row per published job, keyed by the same id as the outbox row it came from.
CREATE TABLE conveyor.runs (
    id           uuid PRIMARY KEY,
    job_name     text NOT NULL,
    queue        text NOT NULL,
    payload      jsonb NOT NULL,
    dedup_key    text,
    status       conveyor.run_status NOT NULL DEFAULT 'queued',
    created_at   timestamptz NOT NULL,
    run_at       timestamptz NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    message_id   text
);

CREATE INDEX runs_job_created ON conveyor.runs (job_name, created_at);

-- One row per (scheduled job, fire time): a schedule that fires twice for the same period (two schedulers, a
-- retried delivery) enqueues one run.
CREATE TABLE conveyor.schedule_fires (
    job_name  text NOT NULL,
    fire_time timestamptz NOT NULL,
    job_id    uuid,
    fired_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_name, fire_time)
);

-- Enqueue from SQL, inside the caller's transaction (like graphile-worker's add_job), for producers that are not
-- Python. The payload cannot be checked against the pydantic model here: an invalid one reaches the handler, which
-- sends it to the dead-letter queue with the validation error attached.
CREATE FUNCTION conveyor.add_job(
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
BEGIN
    SELECT * INTO v_type FROM conveyor.job_types t WHERE t.name = add_job.job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conveyor.add_job: unknown job "%"', add_job.job_name
            USING ERRCODE = '22023', HINT = 'register it in the job registry and run `conveyor migrate`';
    END IF;
    v_queue := coalesce(add_job.queue, v_type.default_queue);
    IF NOT v_queue = ANY (v_type.queues) THEN
        RAISE EXCEPTION 'conveyor.add_job: job "%" cannot go to queue "%"; its queues are %',
            add_job.job_name, v_queue, v_type.queues USING ERRCODE = '22023';
    END IF;
    IF add_job.payload IS NULL OR jsonb_typeof(add_job.payload) <> 'object' THEN
        RAISE EXCEPTION 'conveyor.add_job: payload must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF octet_length(add_job.payload::text) > conveyor.max_payload_bytes() THEN
        RAISE EXCEPTION 'conveyor.add_job: payload is % bytes; the limit is % (store large data elsewhere and pass a reference)',
            octet_length(add_job.payload::text), conveyor.max_payload_bytes() USING ERRCODE = '54000';
    END IF;

    v_id := gen_random_uuid();
    INSERT INTO conveyor.outbox AS o (id, job_name, queue, payload, run_at, dedup_key)
    VALUES (v_id, add_job.job_name, v_queue, add_job.payload, coalesce(add_job.run_at, now()), add_job.dedup_key)
    ON CONFLICT (job_name, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        SELECT o.id INTO v_id FROM conveyor.outbox o
        WHERE o.job_name = add_job.job_name AND o.dedup_key = add_job.dedup_key;
    END IF;
    RETURN v_id;
END;
$$;

-- SQS accepts 256 KiB per message (body plus attributes); the envelope's attributes take well under 1 KiB.
CREATE FUNCTION conveyor.max_payload_bytes() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 261120 $$;
