-- Queries of shared.ledger.cancel. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: job_cancel
-- The whole rule is conveyor.try_cancel_job (migration 0005), shared with SQL callers of conveyor.cancel_job. It
-- reports a refusal as a row instead of raising, so the caller's transaction stays usable.
SELECT cancelled, status FROM conveyor.try_cancel_job(%(id)s, %(reason)s);
