-- Queries of the migration runner's registry sync. Loaded by shared.sqlfile; each block starts with a "-- name:" line.

-- name: job_types_upsert
INSERT INTO conveyor.job_types (name, default_queue, queues, routed) VALUES (%s, %s, %s, %s)
ON CONFLICT (name) DO UPDATE
SET default_queue = EXCLUDED.default_queue, queues = EXCLUDED.queues, routed = EXCLUDED.routed, updated_at = now()
WHERE (job_types.default_queue, job_types.queues, job_types.routed)
      IS DISTINCT FROM (EXCLUDED.default_queue, EXCLUDED.queues, EXCLUDED.routed);

-- name: job_types_delete_others
DELETE FROM conveyor.job_types WHERE NOT (name = ANY(%s));

-- name: outbox_orphans
-- Pending or dead outbox rows whose job or queue the registry (synced to conveyor.job_types) no longer has: no
-- function will ever take them.
SELECT o.job_name, o.queue, count(*) AS rows, bool_or(o.dead) AS dead
FROM (
    SELECT job_name, queue, false AS dead FROM conveyor.outbox
    UNION ALL
    SELECT job_name, queue, true FROM conveyor.outbox_dead
) o
LEFT JOIN conveyor.job_types t ON t.name = o.job_name
WHERE t.name IS NULL OR NOT (o.queue = ANY (t.queues))
GROUP BY o.job_name, o.queue
ORDER BY o.job_name, o.queue;
