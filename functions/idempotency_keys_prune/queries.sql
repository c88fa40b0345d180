-- name: idempotency_keys_delete_expired
-- One batch of keys past their expiry (a key expiring later stays: the API still answers repeats with it). By
-- primary key; keys a concurrent run has locked are skipped, not waited for.
DELETE FROM demo.idempotency_keys
WHERE key IN (
    SELECT key FROM demo.idempotency_keys
    WHERE expires_at < now()
    ORDER BY expires_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
