-- name: release_expired
-- Oldest first, bounded per run; rows another run is releasing are skipped rather than waited for.
UPDATE demo.reservations r
SET released_at = now()
WHERE r.id IN (
    SELECT id FROM demo.reservations
    WHERE released_at IS NULL AND expires_at < now() - make_interval(mins => %(grace_minutes)s)
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);
