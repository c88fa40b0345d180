-- name: voucher_audit_insert_expired
-- One batch: an EXPIRED row for each voucher past its expiry that has none yet.
-- * Only vouchers that expired within the audit retention: an older one's EXPIRED row is one vouchers.audit_archive
--   has deleted (or would delete at once), and writing it again would record the expiry twice.
-- * FOR NO KEY UPDATE SKIP LOCKED: two overlapping runs take different vouchers instead of waiting for each other;
--   the lock does not conflict with the FOR KEY SHARE that other writers' audit inserts take on the voucher.
-- * ON CONFLICT on the partial unique index voucher_audit_expired_once (its predicate repeated, which is how
--   PostgreSQL infers a partial index): an EXPIRED row committed after this statement's snapshot (another writer)
--   is skipped rather than failing the batch.
WITH due AS (
    SELECT v.id
    FROM demo.vouchers v
    WHERE v.expires_at < now()
      AND v.expires_at >= now() - make_interval(days => %(retention_days)s)
      AND NOT EXISTS (
          SELECT 1 FROM demo.voucher_audit a WHERE a.voucher_id = v.id AND a.action = 'EXPIRED'
      )
    ORDER BY v.expires_at, v.id
    LIMIT %(batch_size)s
    FOR NO KEY UPDATE SKIP LOCKED
)
INSERT INTO demo.voucher_audit (voucher_id, action)
SELECT id, 'EXPIRED' FROM due
ON CONFLICT (voucher_id) WHERE action = 'EXPIRED' DO NOTHING;
