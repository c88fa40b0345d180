-- name: order_claim_stale
-- The oldest order pending for longer than the cut-off, locked for this transaction. SKIP LOCKED: an order being
-- paid right now (or cancelled by an overlapping run) is passed over, not waited for; and under READ COMMITTED a
-- locked row is re-checked, so an order paid between the snapshot and the lock no longer matches.
SELECT id
FROM demo.orders
WHERE status = 'pending' AND created_at < now() - make_interval(mins => %(older_than_minutes)s)
ORDER BY created_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: inventory_lock_for_order
-- Lock the order's inventory rows in key order before updating them, so two transactions releasing or reserving
-- stock of the same SKUs take their locks in one order and cannot deadlock.
SELECT i.store_id, i.sku
FROM demo.inventory i
JOIN demo.order_items oi ON oi.store_id = i.store_id AND oi.sku = i.sku
WHERE oi.order_id = %(order_id)s
ORDER BY i.store_id, i.sku
FOR UPDATE OF i;

-- name: inventory_release_for_order
-- Give back the stock the order held. Never below zero: stock counted since (store.sync) may already have dropped
-- the reservation, and the CHECK would otherwise fail the whole cancellation.
UPDATE demo.inventory i
SET reserved = greatest(i.reserved - oi.quantity, 0), updated_at = now()
FROM demo.order_items oi
WHERE oi.order_id = %(order_id)s AND i.store_id = oi.store_id AND i.sku = oi.sku;

-- name: order_cancel
UPDATE demo.orders SET status = 'cancelled', updated_at = now() WHERE id = %(order_id)s;
