-- Queries of scheduled jobs' fires. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: schedule_lock
-- Serializes the fires of one job, whatever their period, until the transaction ends: the overlap check, the
-- pre-check and the enqueue of one fire see everything an earlier fire of the job committed. Two-key form, so the
-- first key keeps these locks apart from any the application takes; a hash collision between two job names only
-- makes their fires wait for each other.
SELECT pg_advisory_xact_lock(hashtext('conveyor.schedule'), hashtext(%(job_name)s));

-- name: schedule_claim_fire
-- The period's one fire: nothing is returned when an earlier fire claimed it (a duplicate delivery).
INSERT INTO conveyor.schedule_fires (job_name, fire_time) VALUES (%(job_name)s, %(fire_time)s)
ON CONFLICT DO NOTHING
RETURNING fire_time;

-- name: schedule_record_job
-- The run the period got: the enqueued job, or its 'skipped' ledger row.
UPDATE conveyor.schedule_fires SET job_id = %(job_id)s WHERE job_name = %(job_name)s AND fire_time = %(fire_time)s;

-- name: schedule_fire_job
SELECT job_id FROM conveyor.schedule_fires WHERE job_name = %(job_name)s AND fire_time = %(fire_time)s;

-- name: schedule_latest_fire
-- Where the local scheduler resumes after being stopped.
SELECT max(fire_time) FROM conveyor.schedule_fires WHERE job_name = %(job_name)s;

-- name: schedule_live_run
-- An earlier run of the job that is still live, if any: in the ledger and not finished (a running one only until
-- its stale_at, after which its worker is taken for dead), or still in the outbox. The ledger half uses the
-- runs_live partial index; the outbox half scans the pending outbox, which stays small.
(SELECT id, status, coalesce(last_started_at, published_at, created_at) AS since
 FROM conveyor.runs
 WHERE job_name = %(job_name)s
   AND finished_at IS NULL
   AND (status IN ('waiting', 'pending', 'queued', 'retrying') OR (status = 'running' AND stale_at >= now()))
 LIMIT 1)
UNION ALL
(SELECT coalesce(job_id, id), 'pending', created_at FROM conveyor.outbox WHERE job_name = %(job_name)s LIMIT 1)
LIMIT 1;

-- name: schedule_record_skip
-- A period that did not run, and why, as a finished ledger row (conveyor.jobs lists it with the others).
INSERT INTO conveyor.runs (id, job_name, queue, payload, status, reason, scheduled_for, created_at, run_at, finished_at)
VALUES (%(id)s, %(job_name)s, %(queue)s, %(payload)s::jsonb, 'skipped', %(reason)s, %(scheduled_for)s, now(), now(), now());
