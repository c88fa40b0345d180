-- name: voucher_audit_delete_old
-- One batch of audit rows older than the retention, oldest first, by primary key; rows a concurrent run has locked
-- are skipped, not waited for.
DELETE FROM demo.voucher_audit
WHERE id IN (
    SELECT id FROM demo.voucher_audit
    WHERE created_at < now() - make_interval(days => %(retention_days)s)
    ORDER BY created_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
