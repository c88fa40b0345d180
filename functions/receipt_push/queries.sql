-- name: sale_get
SELECT id, store_id, total, vat, created_at, receipt_id
FROM demo.sales
WHERE id = %(sale_id)s;

-- name: sale_receipt_store
-- Only the first id sticks: a run that posted again after another stored its id (the service answered the same
-- receipt for the same idempotency key, or a duplicate job got one of its own) changes nothing.
UPDATE demo.sales
SET receipt_id = %(receipt_id)s, receipt_sent_at = now()
WHERE id = %(sale_id)s AND receipt_id IS NULL;
