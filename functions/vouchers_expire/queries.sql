-- name: voucher_audit_insert_expired
-- One batch, one statement: mark each voucher past its expiry that is not marked yet (expired_at) and write its
-- EXPIRED audit row. The mark lives on the voucher, so vouchers.audit_archive deleting the audit row does not make the
-- voucher due again.
-- * FOR NO KEY UPDATE SKIP LOCKED: two overlapping runs take different vouchers instead of waiting for each other;
--   the lock does not conflict with the FOR KEY SHARE that other writers' audit inserts take on the voucher. A row
--   another run marked and committed after this statement's snapshot is re-checked under the lock (expired_at IS
--   NULL no longer holds) and dropped, so it is neither marked again nor given a second row.
-- * ON CONFLICT on the partial unique index voucher_audit_expired_once (its predicate repeated, which is how
--   PostgreSQL infers a partial index): an EXPIRED row another writer committed for an unmarked voucher is kept, and
--   this batch does not fail on it.
WITH due AS (
    SELECT v.id
    FROM demo.vouchers v
    WHERE v.expires_at < now()
      AND v.expired_at IS NULL
    ORDER BY v.expires_at, v.id
    LIMIT %(batch_size)s
    FOR NO KEY UPDATE SKIP LOCKED
),
marked AS (
    UPDATE demo.vouchers v
    SET expired_at = now()
    FROM due
    WHERE v.id = due.id
    RETURNING v.id
)
INSERT INTO demo.voucher_audit (voucher_id, action)
SELECT id, 'EXPIRED' FROM marked
ON CONFLICT (voucher_id) WHERE action = 'EXPIRED' DO NOTHING;
