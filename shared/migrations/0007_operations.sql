-- Operations (issue 14): who did what to which job or queue, which queues are paused, each run's failed attempts,
-- and an index for "how many finished in the last hour / day".

-- Every mutating operation (retry, redrive, cancel, trigger, pause, resume), written in the same transaction as its
-- database effect where it has one, so the log says exactly what happened: an effect without its row, or a row
-- without its effect, cannot commit. Refusals that changed nothing (wrong state, unknown id) are logged too, as
-- result 'error', so an operator's attempts are all visible.
CREATE TABLE conveyor.audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL CHECK (length(actor) BETWEEN 1 AND 500),
    action  text NOT NULL CHECK (action IN ('retry', 'redrive', 'cancel', 'trigger', 'pause', 'resume')),
    target  text NOT NULL CHECK (length(target) BETWEEN 1 AND 500),  -- a job id, a job name or a queue label
    job_id  uuid,
    result  text NOT NULL CHECK (result IN ('ok', 'error')),
    detail  jsonb
);
CREATE INDEX audit_log_job ON conveyor.audit_log (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX audit_log_at ON conveyor.audit_log (at);

-- Paused registry queues. On AWS, pausing also disables the queue's event source mapping and its jobs' schedules;
-- this table is what the page shows and what the local pollers and scheduler obey.
CREATE TABLE conveyor.paused_queues (
    queue     text PRIMARY KEY CHECK (length(queue) BETWEEN 1 AND 80),
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text NOT NULL
);

-- Each failed attempt of a run (the last 25), appended by the handler's outcome statement: a succeeding attempt
-- writes nothing here, so the common path pays nothing. Entries: {attempt, started_at, finished_at, outcome,
-- error_type, error}.
ALTER TABLE conveyor.runs ADD COLUMN attempts jsonb;

-- One failed attempt appended to a run's history, the last 25 kept: the one rule every writer of the history uses
-- (the handler's outcome and takeover statements, the local runtime's recovery). A plain SQL function, so the
-- planner inlines it into those statements. STABLE: timestamps become JSON text in the session's time zone.
CREATE FUNCTION conveyor.attempts_append(
    history jsonb, attempt int, started_at timestamptz, finished_at timestamptz, outcome text, error_type text,
    error text
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_path_query_array(
        coalesce(history, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'started_at', started_at, 'finished_at', finished_at, 'outcome', outcome,
            'error_type', error_type, 'error', left(error, 2000))),
        '$[last - 24 to last]')
$$;

-- Throughput over the last hour / day, and the job list's "finished since" filters.
CREATE INDEX runs_finished ON conveyor.runs (finished_at) WHERE finished_at IS NOT NULL;
