-- name: digest_items_take
-- Each store's oldest unprocessed items, at most %(max_items)s per store, marked processed in the job's
-- transaction (with the emails it enqueues). Items another run holds are skipped, not waited for, so two
-- overlapping runs never list an item twice. The rest wait for the next run.
WITH picked AS (
    SELECT d.id
    FROM demo.stores s
    CROSS JOIN LATERAL (
        SELECT id FROM demo.digest_items
        WHERE store_id = s.id AND processed_at IS NULL
        ORDER BY created_at, id
        LIMIT %(max_items)s
        FOR UPDATE SKIP LOCKED
    ) d
)
UPDATE demo.digest_items i
SET processed_at = now()
FROM picked, demo.stores s, demo.users u
WHERE i.id = picked.id AND s.id = i.store_id AND u.id = s.owner_user_id
RETURNING i.store_id, s.name AS store_name, u.email AS owner_email, u.name AS owner_name, i.id, i.kind, i.summary, i.created_at;

-- name: digest_items_left
-- What is still unprocessed after this run took its share, per store (for the "and N more" line).
SELECT store_id, count(*) FROM demo.digest_items
WHERE processed_at IS NULL AND store_id = ANY(%(store_ids)s)
GROUP BY store_id;

-- name: digest_items_release
-- Items of a store whose owner cannot be emailed go back to unprocessed: they wait until the address is fixed.
UPDATE demo.digest_items SET processed_at = NULL WHERE id = ANY(%(ids)s);
