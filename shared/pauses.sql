-- name: paused_list
SELECT queue FROM conveyor.paused_queues;

-- name: paused_add
INSERT INTO conveyor.paused_queues (queue, paused_by) VALUES (%(queue)s, %(actor)s)
ON CONFLICT (queue) DO NOTHING
RETURNING queue;

-- name: paused_remove
DELETE FROM conveyor.paused_queues WHERE queue = %(queue)s RETURNING queue;
