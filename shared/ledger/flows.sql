-- Queries of shared.ledger.flows. Loaded by shared.sqlfile; each block starts with a "-- name:" line. The flow's
-- rules (count finished children, fail or release the parent) are the trigger in migration 0005.

-- name: flow_insert_parents
-- Parents wait in the ledger, not in the outbox: the relay never sees them until their last child finishes. A
-- nested flow's parent is itself a child (parent_id set), counted by its own parent like any other.
INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at, parent_id, children_pending,
                           flow_policy)
SELECT id, job_name, queue, payload::json, 'waiting', now(), statement_timestamp(), parent_id, children_pending, policy
FROM unnest(%(ids)s::uuid[], %(job_names)s::text[], %(queues)s::text[], %(payloads)s::text[], %(parent_ids)s::uuid[],
            %(children_pending)s::integer[], %(policies)s::text[])
    AS t(id, job_name, queue, payload, parent_id, children_pending, policy);

-- name: flow_insert_children
-- Children are ordinary outbox rows that name their parent; the relay publishes them at once, side by side.
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, parent_id)
SELECT id, job_name, queue, payload::json, statement_timestamp(), parent_id
FROM unnest(%(ids)s::uuid[], %(job_names)s::text[], %(queues)s::text[], %(payloads)s::text[], %(parent_ids)s::uuid[])
    AS t(id, job_name, queue, payload, parent_id);

-- name: flow_children
-- A parent's children wherever they are (outbox, ledger, rows the relay gave up on), in the order they were given
-- (their ids were handed out in that order).
SELECT id, job_name, status, result, last_error_type, last_error, reason
FROM conveyor.jobs
WHERE parent_id = %(parent_id)s
ORDER BY id;

-- name: flow_parent_exists
SELECT children_pending IS NOT NULL AS is_parent FROM conveyor.runs WHERE id = %(parent_id)s;

-- name: flow_lock_parents
-- The flow parents of these jobs, locked in id order. A statement that finishes several children of different
-- flows (the handler runtime's batch outcome) locks their parents in its trigger, in whatever order it updates the
-- rows; two such batches can then wait on each other's parents. Run this first in the same transaction and all
-- writers take parent locks in one order. ORDER BY before FOR UPDATE: rows are locked in the sorted order.
SELECT p.id
FROM conveyor.runs p
WHERE p.id IN (SELECT c.parent_id FROM conveyor.runs c WHERE c.id = ANY(%(ids)s::uuid[]) AND c.parent_id IS NOT NULL)
ORDER BY p.id
FOR UPDATE OF p;
