-- Cancel and flows. conveyor.cancel_job() stops a job that has not started; a flow's parent waits in the ledger
-- ('waiting') until a trigger on conveyor.runs sees its last child finish, and then goes to the outbox in that same
-- transaction (or is failed at once when a child dies under the 'fail' policy).

-- A status a run does not leave by itself: it is over (a redrive of a dead job is a new start, counted as such).
CREATE FUNCTION conveyor.status_is_final(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT status IN ('succeeded', 'failed', 'dead', 'cancelled', 'skipped') $$;

-- Children of a flow still in the outbox (not yet published), for conveyor.jobs and children() reads.
CREATE INDEX outbox_parent ON conveyor.outbox (parent_id) WHERE parent_id IS NOT NULL;


-- ---------------------------------------------------------------------------------------------------------------
-- Cancel
-- ---------------------------------------------------------------------------------------------------------------

-- Cancel a job if it has not started, inside the caller's transaction. Returns (true, the status it had) when it
-- cancelled it, (false, its status) when it is too late (running or finished: nothing is written), and
-- (false, NULL) when no job has this id. For callers that want to go on in their transaction either way (the
-- Python cancel(), the API); conveyor.cancel_job() below raises instead.
--
-- - pending (its row is in the outbox): the row leaves the outbox and the job gets its ledger row, 'cancelled'.
-- - queued, retrying (its message is in SQS), waiting (a flow's parent), pending in the ledger (a released parent):
--   marked 'cancelled'; its rows waiting in the outbox (a retry, a released parent) are deleted; the handler
--   runtime acknowledges its message without running it.
--
-- Locks: the outbox rows of the job first, then its ledger row: the relay's order (its mark deletes the outbox row,
-- then writes the ledger row), so the two never wait on each other in a circle. A relay publishing the job at this
-- moment either has not marked it yet (the row is deleted here; its mark then finds nothing to move, and the message
-- already sent is acknowledged unrun) or marks it first (we wait for its commit and cancel the 'queued' job).
-- A relay's lease is not a lock: cancel always wins over a lease.
CREATE FUNCTION conveyor.try_cancel_job(id uuid, reason text DEFAULT NULL)
RETURNS TABLE (cancelled boolean, status text)
LANGUAGE plpgsql
AS $$
-- Parameters and result columns share names with table columns; in queries a bare name means the column.
#variable_conflict use_column
DECLARE
    v_status text;
    v_row conveyor.outbox%ROWTYPE;
BEGIN
    IF try_cancel_job.id IS NULL THEN
        RAISE EXCEPTION 'conveyor.cancel_job: the job id is NULL' USING ERRCODE = '22004';
    END IF;
    IF char_length(try_cancel_job.reason) > 4000 THEN
        RAISE EXCEPTION 'conveyor.cancel_job: reason must be at most 4000 characters, got %',
            char_length(try_cancel_job.reason) USING ERRCODE = '22023';
    END IF;

    PERFORM 1 FROM conveyor.outbox o
    WHERE (o.id = try_cancel_job.id AND o.job_id IS NULL) OR o.job_id = try_cancel_job.id
    FOR UPDATE;

    -- Twice at most: a ledger row may appear between our look and our insert (a handler recording the start of a
    -- message the relay sent just before we locked the outbox row); the second look sees it.
    FOR v_round IN 1..2 LOOP
        SELECT r.status INTO v_status FROM conveyor.runs r WHERE r.id = try_cancel_job.id FOR UPDATE;
        IF FOUND THEN
            IF v_status NOT IN ('pending', 'queued', 'retrying', 'waiting') THEN
                RETURN QUERY SELECT false, v_status;
                RETURN;
            END IF;
            -- Its rows still in the outbox, including one a flow released since the lock above. SKIP LOCKED: a row
            -- locked now is being marked published by a relay that waits for our ledger row; it keeps 'cancelled'.
            DELETE FROM conveyor.outbox o
            WHERE o.id IN (
                SELECT w.id FROM conveyor.outbox w
                WHERE (w.id = try_cancel_job.id AND w.job_id IS NULL) OR w.job_id = try_cancel_job.id
                FOR UPDATE SKIP LOCKED
            );
            UPDATE conveyor.runs r
            SET status = 'cancelled', reason = try_cancel_job.reason, finished_at = now(), stale_at = NULL,
                updated_at = now()
            WHERE r.id = try_cancel_job.id;
            RETURN QUERY SELECT true, v_status;
            RETURN;
        END IF;

        SELECT * INTO v_row FROM conveyor.outbox o WHERE o.id = try_cancel_job.id AND o.job_id IS NULL;
        IF NOT FOUND THEN
            -- The relay gave up publishing it: conveyor.jobs shows it 'failed'.
            IF EXISTS (SELECT 1 FROM conveyor.outbox_dead d WHERE d.id = try_cancel_job.id AND d.job_id IS NULL) THEN
                RETURN QUERY SELECT false, 'failed'::text;
            ELSE
                RETURN QUERY SELECT false, NULL::text;
            END IF;
            RETURN;
        END IF;
        INSERT INTO conveyor.runs AS r (id, job_name, queue, payload, dedup_key, status, created_at, run_at, reason,
                                        finished_at, parent_id, scheduled_for)
        VALUES (v_row.id, v_row.job_name, v_row.queue, v_row.payload, v_row.dedup_key, 'cancelled', v_row.created_at,
                v_row.run_at, try_cancel_job.reason, now(), v_row.parent_id, v_row.scheduled_for)
        ON CONFLICT (id) DO NOTHING;
        IF FOUND THEN
            DELETE FROM conveyor.outbox o WHERE o.id = v_row.id;
            RETURN QUERY SELECT true, 'pending'::text;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'conveyor.cancel_job: job % kept changing while it was being cancelled', try_cancel_job.id
        USING ERRCODE = '40001', HINT = 'cancel it again';
END;
$$;

-- Cancel a job that has not started (see conveyor.try_cancel_job), in the caller's transaction. Returns the status
-- it had ('pending', 'queued', 'retrying' or 'waiting'). Raises 55000 (object_not_in_prerequisite_state) naming the
-- status when it is running or finished, and P0002 (no_data_found) when no job has this id.
CREATE FUNCTION conveyor.cancel_job(id uuid, reason text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_done boolean;
    v_status text;
BEGIN
    SELECT t.cancelled, t.status INTO v_done, v_status FROM conveyor.try_cancel_job(cancel_job.id, cancel_job.reason) t;
    IF v_done THEN
        RETURN v_status;
    END IF;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'conveyor.cancel_job: no job has id %', cancel_job.id USING ERRCODE = 'P0002';
    END IF;
    RAISE EXCEPTION 'conveyor.cancel_job: job % is %; only pending, queued, retrying or waiting jobs can be cancelled',
        cancel_job.id, v_status USING ERRCODE = '55000';
END;
$$;


-- ---------------------------------------------------------------------------------------------------------------
-- Flows
-- ---------------------------------------------------------------------------------------------------------------

-- A child of flow parent `parent` reached a final status. Under the parent's row lock (two children finishing at
-- the same instant are counted one after the other, so the parent is released exactly once): count it; under the
-- 'fail' policy a dead, failed or cancelled child fails the parent at once; when the last child is done and the
-- parent still waits, the parent goes to the outbox (a new row carrying its id in job_id, due now) and becomes
-- 'pending'. A parent no longer waiting (failed, cancelled, released) only keeps its count.
CREATE FUNCTION conveyor.flow_child_finished(parent uuid, child uuid, child_job text, child_status text, detail text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_parent conveyor.runs%ROWTYPE;
    v_left integer;
BEGIN
    SELECT * INTO v_parent FROM conveyor.runs r WHERE r.id = flow_child_finished.parent FOR UPDATE;
    IF NOT FOUND OR v_parent.children_pending IS NULL THEN
        RETURN;  -- not a flow's parent (or one retention already deleted)
    END IF;
    v_left := greatest(v_parent.children_pending - 1, 0);
    IF v_parent.status = 'waiting' AND v_parent.flow_policy = 'fail'
       AND flow_child_finished.child_status IN ('dead', 'failed', 'cancelled') THEN
        UPDATE conveyor.runs r
        SET status = 'failed', children_pending = v_left, finished_at = now(), updated_at = now(),
            reason = left(format('child %s (%s) ended %s: %s', flow_child_finished.child, flow_child_finished.child_job,
                                 flow_child_finished.child_status,
                                 coalesce(flow_child_finished.detail, 'no error recorded')), 4000)
        WHERE r.id = v_parent.id;
    ELSIF v_parent.status = 'waiting' AND v_left = 0 THEN
        INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, parent_id, scheduled_for)
        VALUES (gen_random_uuid(), v_parent.id, v_parent.job_name, v_parent.queue, v_parent.payload,
                statement_timestamp(), v_parent.created_at, v_parent.parent_id, v_parent.scheduled_for);
        UPDATE conveyor.runs r SET status = 'pending', children_pending = 0, updated_at = now()
        WHERE r.id = v_parent.id;
    ELSE
        UPDATE conveyor.runs r SET children_pending = v_left, updated_at = now() WHERE r.id = v_parent.id;
    END IF;
END;
$$;

-- A finished child runs again (a redrive from its dead-letter queue, a requeue of a row the relay gave up on): it
-- counts as unfinished again, so that its next end is not counted twice. A parent already released or failed is
-- not taken back.
CREATE FUNCTION conveyor.flow_child_reopened(parent uuid) RETURNS void
LANGUAGE sql
AS $$
    UPDATE conveyor.runs r SET children_pending = r.children_pending + 1, updated_at = now()
    WHERE r.id = flow_child_reopened.parent AND r.children_pending IS NOT NULL;
$$;

CREATE FUNCTION conveyor.runs_flow_child() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF conveyor.status_is_final(NEW.status) THEN
        PERFORM conveyor.flow_child_finished(
            NEW.parent_id, NEW.id, NEW.job_name, NEW.status,
            coalesce(NEW.last_error_type || ': ' || NEW.last_error, NEW.last_error, NEW.reason));
    ELSE
        PERFORM conveyor.flow_child_reopened(NEW.parent_id);
    END IF;
    RETURN NULL;
END;
$$;

-- Only rows of a flow's children, and only when they cross the line between unfinished and finished: every other
-- write to the ledger (starts, progress, jobs outside flows) costs the WHEN test and nothing more. Ledger rows are
-- inserted unfinished (a child is counted from enqueue) except a pending child cancelled before publish.
CREATE TRIGGER runs_flow_child_inserted
    AFTER INSERT ON conveyor.runs
    FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL AND conveyor.status_is_final(NEW.status))
    EXECUTE FUNCTION conveyor.runs_flow_child();

CREATE TRIGGER runs_flow_child_updated
    AFTER UPDATE OF status ON conveyor.runs
    FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL
          AND conveyor.status_is_final(OLD.status) IS DISTINCT FROM conveyor.status_is_final(NEW.status))
    EXECUTE FUNCTION conveyor.runs_flow_child();

-- A child the relay could not publish (moved to conveyor.outbox_dead, shown 'failed') is a failed child; put back
-- in the outbox by conveyor.requeue_dead_outbox() it is unfinished again.
CREATE FUNCTION conveyor.outbox_dead_flow_child() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM conveyor.flow_child_finished(NEW.parent_id, NEW.id, NEW.job_name, 'failed',
                                             'the relay could not publish it: ' || NEW.last_error);
    ELSE
        PERFORM conveyor.flow_child_reopened(OLD.parent_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_dead_flow_child_inserted
    AFTER INSERT ON conveyor.outbox_dead
    FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL AND NEW.job_id IS NULL)
    EXECUTE FUNCTION conveyor.outbox_dead_flow_child();

CREATE TRIGGER outbox_dead_flow_child_deleted
    AFTER DELETE ON conveyor.outbox_dead
    FOR EACH ROW
    WHEN (OLD.parent_id IS NOT NULL AND OLD.job_id IS NULL)
    EXECUTE FUNCTION conveyor.outbox_dead_flow_child();

-- A row put back from conveyor.outbox_dead keeps its flow and its period (0002's version predates those columns).
CREATE OR REPLACE FUNCTION conveyor.requeue_dead_outbox(ids uuid[] DEFAULT NULL) RETURNS integer
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
        INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, run_at, created_at, dedup_key, attempt,
                                     parent_id, scheduled_for)
        SELECT id, job_id, job_name, queue, payload, statement_timestamp(), created_at, dedup_key, attempt,
               parent_id, scheduled_for
        FROM moved
        RETURNING 1
    )
    SELECT count(*)::integer FROM inserted;
$$;
