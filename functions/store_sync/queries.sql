-- name: stores_integrated
-- Every store with an inventory integration (a POS reference): the hourly run fans out one sync per store.
SELECT id FROM demo.stores WHERE pos_store_ref IS NOT NULL ORDER BY id;

-- name: store_get
-- The database's clock, read before the GET: when this run's snapshot was taken, on the same clock as synced_at.
SELECT id, pos_store_ref, clock_timestamp() AS fetch_started FROM demo.stores WHERE id = %(store_id)s;

-- name: store_lock
-- Two runs for one store (a manual trigger while the hourly one runs) store one after the other; the second sees
-- when the snapshot already stored was taken.
SELECT synced_at FROM demo.stores WHERE id = %(store_id)s FOR UPDATE;

-- name: inventory_upsert
-- The POS owns name, price and stock on hand; `reserved` is ours (stock pending orders hold) and is kept. Rows that
-- did not change are not touched, so updated_at says when the POS last changed an item and a repeated sync writes
-- nothing. Items the POS no longer lists are left alone: pending orders may still reference them.
INSERT INTO demo.inventory AS inv (store_id, sku, name, price, on_hand)
SELECT %(store_id)s, i.sku, i.name, i.price, i.on_hand
FROM jsonb_to_recordset(%(items)s::jsonb) AS i (sku text, name text, price numeric, on_hand integer)
-- Rows (and so their locks) in (store_id, sku) order, as reservations.cleanup takes them: the two cannot deadlock.
ORDER BY i.sku
ON CONFLICT (store_id, sku) DO UPDATE
SET name = excluded.name, price = excluded.price, on_hand = excluded.on_hand, updated_at = now()
WHERE (inv.name, inv.price, inv.on_hand) IS DISTINCT FROM (excluded.name, excluded.price, excluded.on_hand);

-- name: store_synced
-- When the stored snapshot was fetched, not when it committed: a run that fetched later but committed first must not
-- look older than one that fetched earlier.
UPDATE demo.stores SET synced_at = %(fetch_started)s WHERE id = %(store_id)s;
