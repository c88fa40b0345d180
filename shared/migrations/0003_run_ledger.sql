-- The run ledger: conveyor.runs follows every published job to its end (started, succeeded, retrying, dead,
-- cancelled, skipped), and conveyor.jobs answers "what happened to job X" for every job, pending ones included.
--
-- Why two places and a view rather than one table: the hot outbox holds only what is not yet published, so the
-- relay's claim scan stays proportional to the backlog and vacuum keeps up; enqueue stays one INSERT. A job's row
-- moves from conveyor.outbox to conveyor.runs when it is published (or cancelled, or released by its flow), under
-- the same id; conveyor.jobs shows both, so a reader never needs to know where a job is.

-- Status as text with a CHECK rather than an enum: statuses are added over time, and an enum value cannot be added
-- and used in the same migration transaction.
ALTER TABLE conveyor.runs ALTER COLUMN status DROP DEFAULT;
ALTER TABLE conveyor.runs ALTER COLUMN status TYPE text USING status::text;
ALTER TABLE conveyor.runs ALTER COLUMN status SET DEFAULT 'queued';
DROP TYPE conveyor.run_status;
ALTER TABLE conveyor.runs ADD CONSTRAINT runs_status CHECK (status IN (
    'waiting',    -- a flow's parent, waiting for its children
    'pending',    -- released to the outbox (a flow's parent) and not yet published
    'queued',     -- published to SQS, not started
    'running',    -- a handler has it (see stale_at)
    'retrying',   -- an attempt failed; the next one waits on SQS (or in the outbox)
    'succeeded',
    'failed',     -- ended without a run that could succeed and without a DLQ copy (a flow whose child died)
    'dead',       -- in the job's dead-letter queue, with the reason
    'cancelled',
    'skipped'     -- a scheduled period that did not run (overlap, pre_check, disabled, missed), with the reason
));

-- A foreign producer's message, a cancelled pending job and a flow's parent have no publish time.
ALTER TABLE conveyor.runs ALTER COLUMN published_at DROP NOT NULL;
ALTER TABLE conveyor.runs ALTER COLUMN published_at DROP DEFAULT;

ALTER TABLE conveyor.runs
    -- Runs started so far (the attempt number of the current or last run); 0 until the first start.
    ADD COLUMN attempt          integer NOT NULL DEFAULT 0,
    ADD COLUMN first_started_at timestamptz,
    ADD COLUMN last_started_at  timestamptz,
    ADD COLUMN finished_at      timestamptz,
    -- While running: when the run counts as abandoned (its worker died) and its redelivery may take it over.
    ADD COLUMN stale_at         timestamptz,
    -- Set by each start: only the holder of the current token may report the run's outcome, so a worker that was
    -- taken for dead cannot overwrite what its successor did.
    ADD COLUMN run_token        uuid,
    ADD COLUMN last_error_type  text,
    ADD COLUMN last_error       text CHECK (char_length(last_error) <= 4000),
    -- Why the run ended the way it did when it did not run: cancelled by whom, skipped why, failed flow.
    ADD COLUMN reason           text CHECK (char_length(reason) <= 4000),
    ADD COLUMN progress         smallint CHECK (progress BETWEEN 0 AND 100),
    ADD COLUMN progress_message text CHECK (char_length(progress_message) <= 500),
    ADD COLUMN result           json CHECK (octet_length(result::text) <= 16384),
    ADD COLUMN parent_id        uuid,
    -- The period (fire time) a scheduled run is for.
    ADD COLUMN scheduled_for    timestamptz,
    -- A flow's parent: children not yet finished, and what a dead child does to it ('fail' or 'continue').
    ADD COLUMN children_pending integer,
    ADD COLUMN flow_policy      text CHECK (flow_policy IN ('fail', 'continue')),
    ADD COLUMN updated_at       timestamptz NOT NULL DEFAULT now();

-- Newest first for the jobs list, with or without a job filter (runs_job_created exists).
CREATE INDEX runs_created ON conveyor.runs (created_at);
-- Live runs only (a small set): overlap checks of scheduled jobs, dedup while active, stale-run sweeps.
CREATE INDEX runs_live ON conveyor.runs (job_name, dedup_key)
    WHERE status IN ('waiting', 'pending', 'queued', 'running', 'retrying');
CREATE INDEX runs_parent ON conveyor.runs (parent_id) WHERE parent_id IS NOT NULL;

-- The outbox carries what the ledger row and the message need to know from enqueue: the flow a job belongs to and
-- the period a scheduled run is for.
ALTER TABLE conveyor.outbox
    ADD COLUMN parent_id     uuid,
    ADD COLUMN scheduled_for timestamptz;
ALTER TABLE conveyor.outbox_dead
    ADD COLUMN parent_id     uuid,
    ADD COLUMN scheduled_for timestamptz;

-- Every job, wherever it is: published ones from the ledger, pending ones from the outbox, and ones the relay gave
-- up publishing from conveyor.outbox_dead (status 'failed'). A row of the outbox or outbox_dead with a job_id is a
-- job that already has its ledger row (a retry waiting in the outbox, a released flow parent), so it is not listed
-- twice. A running run past its stale_at shows as 'abandoned': its worker died, and its redelivery takes it over.
CREATE VIEW conveyor.jobs AS
SELECT r.id, r.job_name, r.queue,
       CASE WHEN r.status = 'running' AND r.stale_at < now() THEN 'abandoned' ELSE r.status END AS status,
       r.attempt, r.created_at, r.run_at, r.published_at, r.first_started_at, r.last_started_at, r.finished_at,
       r.stale_at, r.last_error_type, r.last_error, r.reason, r.progress, r.progress_message, r.result,
       r.parent_id, r.scheduled_for, r.message_id, r.dedup_key, r.payload, r.children_pending, r.updated_at
FROM conveyor.runs r
UNION ALL
SELECT o.id, o.job_name, o.queue, 'pending', 0, o.created_at, o.run_at, NULL, NULL, NULL, NULL,
       NULL, NULL, o.last_error, NULL, NULL, NULL, NULL,
       o.parent_id, o.scheduled_for, NULL, o.dedup_key, o.payload, NULL, o.created_at
FROM conveyor.outbox o
WHERE o.job_id IS NULL
UNION ALL
SELECT d.id, d.job_name, d.queue, 'failed', 0, d.created_at, d.run_at, NULL, NULL, NULL, d.failed_at,
       NULL, 'PublishFailed', d.last_error, 'the relay could not publish it; `conveyor outbox --failed` lists it',
       NULL, NULL, NULL, d.parent_id, d.scheduled_for, NULL, d.dedup_key, d.payload, NULL, d.failed_at
FROM conveyor.outbox_dead d
WHERE d.job_id IS NULL;
