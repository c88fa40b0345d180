-- name: sale_insert
INSERT INTO demo.sales (store_id, order_id, total, vat)
VALUES (%(store_id)s, %(order_id)s, %(total)s, %(vat)s)
RETURNING id;
