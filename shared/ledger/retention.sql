-- Retention: deleting finished ledger rows and old schedule claims. Loaded by shared.sqlfile.
--
-- Every DELETE takes at most %(limit)s rows (1,000), chosen and locked in the same statement with FOR UPDATE SKIP
-- LOCKED and deleted by ctid (a TID scan of exactly those rows). Each runs in its own short transaction (autocommit):
-- a row another session holds (a handler reporting an outcome) is skipped, never waited for, and no lock outlives
-- the statement.

-- name: runs_close_abandoned
-- Runs still 'running' a day past their stale_at: their message would have come back within the queue's visibility
-- timeout (12 h at most) and been taken over by its next delivery. It was not, so SQS's redrive policy moved it to
-- the DLQ (its receives ran out) or the queue dropped it: the run is dead, and ending it lets a flow waiting on it
-- move on and this job count its rows. One batch; the runs_live index finds them.
UPDATE conveyor.runs r
SET status = 'dead', finished_at = now(), stale_at = NULL, updated_at = now(), last_error_type = 'Abandoned',
    last_error = CASE WHEN r.status = 'running'
                      THEN 'attempt ' || r.attempt || ' reported no outcome by ' || r.stale_at
                           || ' and its message never came back (moved to the DLQ by the redrive policy, or expired)'
                      ELSE 'no news of it since ' || r.updated_at || ', longer than its queue keeps a message' END
WHERE r.ctid = ANY (ARRAY(
    SELECT a.ctid FROM conveyor.runs a
    WHERE a.finished_at IS NULL
      AND ((a.status = 'running' AND a.stale_at < now() - %(grace)s::interval)
           -- Published and never heard of since the queue's retention: the message expired or went to the DLQ
           -- unrun (the ledger missed its runs while the database was unreachable).
           OR (a.status IN ('queued', 'retrying') AND a.updated_at < now() - %(expired)s::interval))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING r.id;

-- name: runs_job_names
-- The job names present in conveyor.runs by a loose index scan on runs_job_created: one index probe per name, not a
-- scan of the table. Retention walks job by job because each job may keep its rows for its own number of days.
WITH RECURSIVE names(name) AS (
    (SELECT job_name FROM conveyor.runs ORDER BY job_name LIMIT 1)
    UNION ALL
    SELECT (SELECT r.job_name FROM conveyor.runs r WHERE r.job_name > n.name ORDER BY r.job_name LIMIT 1)
    FROM names n
    WHERE n.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL;

-- name: runs_delete_finished
-- One batch of one job's rows in the given statuses that finished more than %(keep)s ago. Their age counts from
-- finished_at (updated_at, then created_at, for a row that never recorded its end). "created_at < cutoff" is implied
-- (a job ends after it is created) and is what lets runs_job_created drive the scan, oldest first; it can only
-- keep a row longer, never delete one sooner. %(after)s is where the previous batch of this pass stopped, so rows
-- this pass keeps (live, or in another status) are read once per pass, not once per batch. A flow's child is kept while its parent is live: the parent still
-- reads its children's results.
WITH deleted AS (
    DELETE FROM conveyor.runs d
    WHERE d.ctid = ANY (ARRAY(
        SELECT r.ctid
        FROM conveyor.runs r
        WHERE r.job_name = %(job_name)s
          AND r.created_at < now() - %(keep)s::interval
          AND r.created_at >= %(after)s
          AND r.status = ANY (%(statuses)s::text[])
          AND coalesce(r.finished_at, r.updated_at, r.created_at) < now() - %(keep)s::interval
          -- One probe per child by primary key (and outbox_job for a parent's row waiting in the outbox); the
          -- UNION keeps the planner from hashing all live rows and the whole outbox instead.
          AND (r.parent_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM conveyor.runs p WHERE p.id = r.parent_id AND p.status = ANY (%(live)s::text[])
                UNION ALL
                SELECT 1 FROM conveyor.outbox o WHERE o.id = r.parent_id
                UNION ALL
                SELECT 1 FROM conveyor.outbox o WHERE o.job_id = r.parent_id))
        ORDER BY r.created_at
        LIMIT %(limit)s
        FOR UPDATE OF r SKIP LOCKED
    ))
    RETURNING d.status, d.created_at
)
SELECT status, count(*), max(created_at) FROM deleted GROUP BY status;

-- name: schedule_fires_job_names
-- The job names present in conveyor.schedule_fires, by a loose index scan on its primary key.
WITH RECURSIVE names(name) AS (
    (SELECT job_name FROM conveyor.schedule_fires ORDER BY job_name LIMIT 1)
    UNION ALL
    SELECT (SELECT f.job_name FROM conveyor.schedule_fires f WHERE f.job_name > n.name ORDER BY f.job_name LIMIT 1)
    FROM names n
    WHERE n.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL;

-- name: schedule_fires_delete
-- One batch of one job's claimed periods older than %(keep)s, never its latest: the schedulers read the latest fire
-- to decide whether periods were missed. %(after)s: where the previous batch stopped.
DELETE FROM conveyor.schedule_fires d
WHERE d.ctid = ANY (ARRAY(
    SELECT f.ctid
    FROM conveyor.schedule_fires f
    WHERE f.job_name = %(job_name)s
      AND f.fire_time < now() - %(keep)s::interval
      AND f.fire_time >= %(after)s
      AND f.fire_time < (SELECT max(l.fire_time) FROM conveyor.schedule_fires l WHERE l.job_name = %(job_name)s)
    ORDER BY f.fire_time
    LIMIT %(limit)s
    FOR UPDATE OF f SKIP LOCKED
))
RETURNING d.fire_time;
